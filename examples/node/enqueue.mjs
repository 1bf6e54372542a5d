// Record a guest's PIN through latchkey's HTTP API and wait for the lock.
//
//   LATCHKEY_URL=http://latchkey-serve LATCHKEY_TOKEN=... \
//   node enqueue.mjs ACCESS_CODE_ID PIN
//
// Exits 0 when the code is on the lock as asked, 1 when latchkey says it is
// not (the outcome's error says why), 3 when it is not finished within the wait.
// Node 18 or later (fetch is built in); no dependencies.

import { randomUUID } from "node:crypto";

const url = (process.env.LATCHKEY_URL ?? "http://localhost:8080").replace(/\/$/, "");
const auth = { Authorization: `Bearer ${process.env.LATCHKEY_TOKEN}` };
const [accessCodeId, pin] = process.argv.slice(2);

// One idempotency key per desired state: sent again, it makes no second generation.
const put = await fetch(`${url}/v1/access-codes/${encodeURIComponent(accessCodeId)}`, {
  method: "PUT",
  headers: { ...auth, "Content-Type": "application/json", "Idempotency-Key": `example-${randomUUID()}` },
  body: JSON.stringify({ code: pin, name: "Guest" }),
});
const recorded = await put.json();
if (put.status === 422) {
  console.error(`refused: ${recorded.error.field}: ${recorded.error.rule}`);
  process.exit(2);
}
if (put.status !== 202) throw new Error(`latchkey answered ${put.status}: ${JSON.stringify(recorded)}`);

// Long-poll until that generation is over (at most 60 s per request).
const params = new URLSearchParams({ wait: "60", generation: String(recorded.generation) });
const outcome = await (await fetch(`${url}/v1/access-codes/${encodeURIComponent(accessCodeId)}?${params}`, { headers: auth })).json();
console.log(`${accessCodeId} generation ${recorded.generation}: ${outcome.state}`);
if (outcome.state === "succeeded" || outcome.state === "expired") process.exit(0);
if (outcome.finished_at) {
  console.log(`why: ${outcome.error.kind}: ${outcome.error.message}`);
  process.exit(1);
}
process.exit(3);
