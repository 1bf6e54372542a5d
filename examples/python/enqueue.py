"""Record a guest's PIN through latchkey's HTTP API and wait for the lock.

    LATCHKEY_URL=http://latchkey-serve LATCHKEY_TOKEN=... \
    python3 enqueue.py ACCESS_CODE_ID PIN

Exits 0 when the code is on the lock as asked, 1 when latchkey says it is not
(the outcome's error says why), 3 when it is not finished within the wait.
"""

import os
import sys
import uuid

import requests

url = os.environ.get("LATCHKEY_URL", "http://localhost:8080").rstrip("/")
headers = {"Authorization": f"Bearer {os.environ['LATCHKEY_TOKEN']}"}
access_code_id, pin = sys.argv[1], sys.argv[2]

# One idempotency key per desired state: if the answer is lost and we send
# again, latchkey makes no second generation.
key = f"example-{uuid.uuid4()}"
for attempt in range(3):
    try:
        r = requests.put(
            f"{url}/v1/access-codes/{access_code_id}",
            json={"code": pin, "name": "Guest"},
            headers={**headers, "Idempotency-Key": key},
            timeout=10,
        )
        break
    except requests.ConnectionError:
        if attempt == 2:
            raise
if r.status_code == 422:
    error = r.json()["error"]
    sys.exit(f"refused: {error.get('field')}: {error.get('rule')}")
r.raise_for_status()
generation = r.json()["generation"]

# Long-poll until that generation is over (at most 60 s per request).
outcome = requests.get(
    f"{url}/v1/access-codes/{access_code_id}",
    params={"wait": 60, "generation": generation},
    headers=headers,
    timeout=70,
).json()
print(f"{access_code_id} generation {generation}: {outcome['state']}")
if outcome["state"] in ("succeeded", "expired"):
    sys.exit(0)
if outcome.get("finished_at"):
    print(f"why: {outcome['error']['kind']}: {outcome['error']['message']}")
    sys.exit(1)
sys.exit(3)
