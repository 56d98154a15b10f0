//! Tiny glob for DID and caller patterns: `*` matches any run, `?` one char.

/// Iterative matcher with single backtrack point: linear for patterns with
/// one `*`, and never recursive, so hostile input cannot blow the stack.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "+15551234"));
        assert!(glob_match("+1555*", "+15551234"));
        assert!(!glob_match("+1555*", "+1666"));
        assert!(glob_match("100?", "1001"));
        assert!(!glob_match("100?", "10012"));
        assert!(glob_match("*00*", "1001"));
        assert!(glob_match("1000", "1000"));
        assert!(!glob_match("1000", "10000"));
    }
}
