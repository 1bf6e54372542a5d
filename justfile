# latchkey's tasks. Install just with `pip install rust-just`.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Runs every test (the README's test command; CI runs it).
test:
    cargo nextest run --workspace

# The queue at work on a Redis of its own, with a table of outcomes.
demo:
    cargo run --quiet -p latchkey -- demo

# Throughput figures (release build). Extra arguments go to `latchkey bench`.
bench *ARGS:
    cargo run --release --quiet -p latchkey -- bench {{ARGS}}

# Formatting and clippy, warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
