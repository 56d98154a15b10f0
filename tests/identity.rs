//! Caller identity from a carrier: a trusted trunk's P-Asserted-Identity
//! is the caller, in E.164; national From numbers are read in the trunk's
//! country; `Privacy: id` keeps the number out of records and logs but not
//! out of the flow; Diversion reaches the flow too; a malformed
//! P-Asserted-Identity falls back to From.

mod common;

use std::time::Duration;

use common::standin::*;
use common::*;

const OPERATOR: &str = "operator-token-for-identity-tests";

#[test]
fn a_trusted_carriers_asserted_caller_reaches_the_flow_in_e164() {
    require("sipp", "sip-tester");
    let (port, log, _) = stand_in();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("who.toml"),
        "name = \"who\"\n\n[[nodes]]\nid = \"text\"\ntype = \"send_sms\"\n\
         body = \"raw={{caller_raw}} div={{diversion}}\"\nnext = \"bye\"\non_error = \"bye\"\n\n\
         [[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{flows}\"\n\n\
         [http]\noperator_token = \"{OPERATOR}\"\n\n\
         [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
         [[trunks]]\nname = \"carrier\"\ninbound_cidrs = [\"127.0.0.1/32\"]\ntrust_identity = true\ndefault_country = \"ES\"\n\n\
         [[routes]]\nflow = \"who\"\n",
        flows = dir.path().display(),
    ));
    // From (national), P-Asserted-Identity, Privacy, Diversion, per call
    // (SIPp splits fields at every `;`, so these values carry none; the
    // unit tests in crossline-sip cover `;user=phone` and `id;critical`).
    let inf = dir.path().join("callers.csv");
    std::fs::write(
        &inf,
        "SEQUENTIAL\n\
         612345678;\"Ana\" <sip:+34600111222@carrier.example>, <tel:+34600111222>;id;<sip:910000000@carrier.example>\n\
         612345678;<sip:@>;none;<sip:+34910000001@carrier.example>\n",
    )
    .unwrap();
    let inf = inf.display().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_identity.xml"),
            &gw.sip_addr(),
            "-inf",
            &inf,
            "-m",
            "2",
            "-l",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(run.ok(), "{}", run.describe());

    // Call 1: the asserted caller, in E.164, though From said otherwise
    // and the caller asked for privacy; the national diversion in E.164.
    let first = wait_sms_to(&log, "+34600111222", "raw=", Duration::from_secs(10));
    assert_eq!(first["Body"], "raw=+34600111222 div=+34910000000");
    // Call 2: a malformed P-Asserted-Identity: the From number, read in
    // the trunk's country.
    let second = wait_sms_to(&log, "+34612345678", "raw=", Duration::from_secs(10));
    assert_eq!(second["Body"], "raw=612345678 div=+34910000001");

    // Records: the private caller is anonymous; the other is E.164.
    let calls = gw.api(OPERATOR, "GET", "/v1/calls", None);
    assert_eq!(calls.status, 200, "{}", calls.body);
    let callers: Vec<String> = calls.json()["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", calls.body))
        .iter()
        .map(|c| c["caller"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut sorted = callers.clone();
    sorted.sort();
    assert_eq!(sorted, ["+34612345678", "anonymous"], "{}", calls.body);
    // The private caller's number is in no log line.
    assert_no_pii(&gw.log(), &["+34600111222"]);
}
