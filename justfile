# latchkey's tasks. Install just with `pip install rust-just`.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Runs every test (the README's test command; CI runs it). Installs
# cargo-nextest first when it is missing.
test:
    cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
    cargo nextest run --workspace
    just test-cluster

# The pipeline tests again, on a three-master Redis Cluster (the reconcile
# queue's partitions spread over its masters). Tests that reach behind the
# store to one node, or put a proxy, a password or TLS in front of it, stay
# on a single node.
test-cluster:
    LATCHKEY_TEST_CLUSTER=1 cargo nextest run -p latchkey-tests --test pipeline

# The queue at work on a Redis of its own, with a table of outcomes.
demo:
    cargo run --quiet -p latchkey -- demo

# Benchmark figures (release build), with BullMQ side by side when Node is
# installed. Extra arguments go to `latchkey bench`.
bench *ARGS:
    if command -v npm >/dev/null && [ ! -d target/peers/node_modules/bullmq ]; then mkdir -p target/peers && cp -r ../shared/peers/. target/peers/ && (cd target/peers && npm install --no-audit --no-fund --silent bullmq@5); fi
    cargo run --release --quiet -p latchkey -- bench $( [ -d target/peers/node_modules/bullmq ] && echo --peers target/peers ) {{ARGS}}

# Formatting, clippy (warnings as errors), the deployment files (rendered and
# validated, Dockerfile linted), the supply chain (cargo deny, offline) and the
# HTTP API's contract (OpenAPI document valid, examples type-checked against it).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    bash deploy/check
    bash deploy/deny
    bash examples/check
