"""Where latchkey keeps an access code's records in Redis: the base key of the
reconcile queue's partition its id hashes to (see the README, "Partitions").

    base = record_base("ac_123")          # e.g. 'latchkey:{reconcile:16:9:4}'
    r.get(f"{base}:outcome:ac_123")

Standard library only. Run as a script, it prints the base of each id given.
"""

import sys
import zlib

SLOTS = 16384


def slot_of(tag: str) -> int:
    """Redis Cluster's hash slot of a hash tag (CRC-16/XMODEM mod 16384)."""
    crc = 0
    for byte in tag.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc % SLOTS


def partition_tag(i: int, partitions: int, queue: str = "reconcile") -> str:
    """The hash tag of partition i: the first `<queue>:<partitions>:<i>:<n>`
    whose slot lies in the i-th of `partitions` equal ranges of slots."""
    n = 0
    while slot_of(f"{queue}:{partitions}:{i}:{n}") * partitions // SLOTS != i:
        n += 1
    return f"{queue}:{partitions}:{i}:{n}"


def record_base(access_code_id: str, partitions: int = 16, prefix: str = "latchkey") -> str:
    """The base key of the partition holding this access code's records."""
    if partitions == 1:
        return f"{prefix}:{{reconcile}}"
    i = zlib.crc32(access_code_id.encode()) % partitions
    return f"{prefix}:{{{partition_tag(i, partitions)}}}"


if __name__ == "__main__":
    parts = int(sys.argv[1])
    for code in sys.argv[2:]:
        print(record_base(code, parts))
