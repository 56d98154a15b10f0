#!/usr/bin/env bash
# Regenerate the committed prompts in audio/ (8 kHz mono 16-bit WAV).
#
# Provenance only: the WAVs are committed, nothing builds from this. Output is
# byte-for-byte repeatable for a given tool version (sox -R seeds pluck's
# noise; -D turns off dither). Made with SoX 14.4.2 and eSpeak NG 1.51
# (Debian: apt-get install sox espeak-ng).
#
# Usage: scripts/make-audio.sh [output-dir]   (default: audio/ in the repo)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/audio}
for tool in sox espeak-ng; do
    command -v "$tool" >/dev/null || { echo "make-audio: $tool not installed" >&2; exit 1; }
done
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Global sox options: repeatable randomness, no dither, quiet.
SOX=(sox -R -D -V1)
# Final format for every file: 8 kHz mono 16-bit, high-quality resampler.
FINAL=(-r 8000 -c 1 -b 16 -e signed-integer)

# --- wait-music.wav -------------------------------------------------------
# Eight strummed chords, 2.5 s each (20 s), over a soft sine pad, made at
# 48 kHz so the plucks' harmonics are filtered rather than aliased. Each
# chord rings into the next; the whole ends faded to silence and starts
# with a 10 ms fade-in, so looping it never clicks. Low-passed at 3 kHz to
# soften the plucks; peak -8 dBFS so it sits under the spoken prompts.
chords=(
    "C3 G3 B3 E4 G4"   # Cmaj7
    "A2 E3 G3 C4 E4"   # Am7
    "D3 A3 C4 F4 A4"   # Dm7
    "G2 D3 G3 B3 F4"   # G7
    "C3 G3 B3 E4 G4"   # Cmaj7
    "E2 B2 D3 G3 B3"   # Em7
    "F2 C3 E3 A3 E4"   # Fmaj7
    "G2 D3 G3 B3 D4"   # G
)
step=2.5
parts=()
for i in "${!chords[@]}"; do
    read -r -a notes <<<"${chords[$i]}"
    pluck=() pad=()
    for n in "${notes[@]}"; do pluck+=(pluck "$n"); done
    for n in "${notes[@]:0:3}"; do pad+=(sine "$n"); done
    start=$(awk "BEGIN { print $i * $step }")
    # Strum: 70 ms between strings, low to high.
    "${SOX[@]}" -n -r 48000 -b 32 -e float "$tmp/pluck$i.wav" \
        synth 3.5 "${pluck[@]}" delay 0 0.07 0.14 0.21 0.28 remix - \
        fade q 0.005 3.5 1.5 pad "$start"
    # Pad: slow swell, 24 dB under the plucks.
    "${SOX[@]}" -n -r 48000 -b 32 -e float "$tmp/pad$i.wav" \
        synth 3.5 "${pad[@]}" remix - fade h 1.0 3.5 1.5 gain -24 pad "$start"
    parts+=("$tmp/pluck$i.wav" "$tmp/pad$i.wav")
done
"${SOX[@]}" -m "${parts[@]}" -b 32 -e float "$tmp/mix.wav"
"${SOX[@]}" "$tmp/mix.wav" "${FINAL[@]}" "$out/wait-music.wav" \
    lowpass 3000 reverb 40 50 60 trim 0 20 fade q 0.01 20 2.5 rate -v 8000 norm -8

# --- spoken prompts -------------------------------------------------------
# espeak-ng writes a 22.05 kHz WAV (-w, not --stdout, so the header has
# true lengths); sox pads 0.2 s before and 0.3 s after, resamples, and
# normalises to -3 dBFS peak.
speak() { # voice, file, text
    espeak-ng -v "$1" -s 150 -w "$tmp/speech.wav" "$3"
    "${SOX[@]}" "$tmp/speech.wav" "${FINAL[@]}" "$out/$2" \
        highpass 100 rate -v 8000 norm -3 pad 0.2 0.3
}
speak en-us hold-en.wav "Thank you for holding. Please stay on the line."
speak es hold-es.wav "Gracias por esperar. Por favor, no cuelgue."
speak en-us welcome-en.wav "Welcome to crossline. This is the demo flow."

for f in wait-music hold-en hold-es welcome-en; do
    printf '%-16s %s s\n' "$f.wav" "$(soxi -D "$out/$f.wav")"
done
