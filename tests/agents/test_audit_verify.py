"""Finding the first broken link of an audit chain and naming the tampering that explains it (no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

from streams.agents.audit_chain import GENESIS_HASH, ChainEntry, UnreadableEntry
from streams.agents.audit_verify import duplicate_sources, find_first_break, verify_entries


def make_chain(length: int) -> list[ChainEntry]:
    chain: list[ChainEntry] = []
    previous = GENESIS_HASH
    for sequence in range(length):
        sealed = ChainEntry(
            sequence=sequence,
            tenant_id="acme",
            topic="shop.order",
            partition=sequence % 3,
            offset=sequence // 3,
            event_id=f"e-{sequence}",
            event_type="shop.order",
            actor=f"user-{sequence % 5}",
            occurred_at=1_700_000_000_000 + sequence,
            payload_sha256=f"{sequence:064x}",
            previous_entry_hash=previous,
        ).sealed()
        chain.append(sealed)
        previous = sealed.entry_hash
    return chain


def rehash_from(chain: list[ChainEntry], start: int) -> list[ChainEntry]:
    """What a careful forger does after a change: recompute every hash from `start` on."""
    out = chain[:start]
    previous = out[-1].entry_hash if out else GENESIS_HASH
    for item in chain[start:]:
        fixed = dataclasses.replace(item, previous_entry_hash=previous).sealed()
        out.append(fixed)
        previous = fixed.entry_hash
    return out


def test_an_intact_chain_has_no_break_and_verifies() -> None:
    chain = make_chain(30)
    assert find_first_break(chain) is None
    report = verify_entries(chain, "memory")
    assert report.ok
    assert (report.entries, report.tip_sequence, report.tip_hash) == (30, 29, chain[-1].entry_hash)
    assert report.to_json()["first_break"] is None
    assert find_first_break([]) is None


def test_edited_field_is_modified_at_its_sequence() -> None:
    chain = make_chain(30)
    chain[12] = dataclasses.replace(chain[12], actor="mallory")
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("modified", "entry_hash", 12, 12)
    assert found.expected == chain[12].computed_hash()
    assert found.found == chain[12].entry_hash


def test_edited_and_rehashed_entry_is_modified_at_its_sequence() -> None:
    chain = make_chain(30)
    chain[12] = dataclasses.replace(chain[12], actor="mallory").sealed()
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("modified", "previous_entry_hash", 12, 12)
    assert found.found == chain[12].entry_hash


def test_rewritten_sequence_is_modified() -> None:
    chain = make_chain(10)
    chain[4] = dataclasses.replace(chain[4], sequence=40).sealed()
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("modified", "sequence", 4, 40)
    assert (found.expected, found.found) == ("4", "40")


@pytest.mark.parametrize("deleted", [0, 7, 28])
def test_deleted_entry_is_named_by_its_missing_sequence(deleted: int) -> None:
    chain = make_chain(30)
    del chain[deleted]
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("deleted", "sequence", deleted, deleted)
    assert f"sequence {deleted} missing" in found.detail


def test_several_deleted_entries_are_one_range() -> None:
    chain = make_chain(30)
    del chain[5:9]
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.sequence, found.expected, found.found) == ("deleted", 5, "5", "9")
    assert "sequences 5..8 missing" in found.detail


def test_inserted_forgery_that_does_not_hash_is_inserted() -> None:
    chain = make_chain(20)
    forged = dataclasses.replace(chain[9], event_id="forged")  # copied, edited, hash left as it was
    chain.insert(10, forged)
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position) == ("inserted", "entry_hash", 10)


def test_inserted_forgery_that_links_correctly_is_inserted_at_its_position() -> None:
    chain = make_chain(20)
    forged = dataclasses.replace(chain[10], event_id="forged", previous_entry_hash=chain[9].entry_hash).sealed()
    chain.insert(10, forged)
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("inserted", "previous_entry_hash", 10, 10)
    assert found.expected == forged.entry_hash


def test_forgery_with_the_whole_tail_rehashed_is_invisible_to_the_chain_alone() -> None:
    """Why --check-sources and exported tips matter: a full rewrite is self-consistent."""
    chain = make_chain(20)
    chain[5] = dataclasses.replace(chain[5], payload_sha256="0" * 64)
    assert find_first_break(rehash_from(chain, 5)) is None


@pytest.mark.parametrize(("first", "second"), [(0, 1), (14, 15), (3, 17)])
def test_swapped_entries_are_reordered_at_the_first(first: int, second: int) -> None:
    chain = make_chain(20)
    chain[first], chain[second] = chain[second], chain[first]
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("reordered", "sequence", first, first)
    assert (found.expected, found.found) == (str(first), str(second))


def test_entry_moved_back_is_reordered() -> None:
    chain = make_chain(20)
    moved = chain.pop(3)
    chain.insert(12, moved)
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.position, found.sequence) == ("reordered", 3, 3)


def test_replayed_entry_is_duplicated() -> None:
    chain = make_chain(20)
    chain.insert(8, chain[7])
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.position, found.sequence) == ("duplicated", 8, 7)


def test_unreadable_record_breaks_the_chain_where_it_stands() -> None:
    chain: list[ChainEntry | UnreadableEntry] = [*make_chain(5)]
    chain.insert(2, UnreadableEntry("bad magic"))
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence, found.found) == (
        "unreadable",
        "decode",
        2,
        None,
        "bad magic",
    )


def test_first_entry_must_start_from_genesis() -> None:
    chain = make_chain(5)
    chain[0] = dataclasses.replace(chain[0], previous_entry_hash="1" * 64).sealed()
    found = find_first_break(chain)
    assert found is not None
    assert (found.kind, found.check, found.position, found.sequence) == ("modified", "previous_entry_hash", 0, 0)


def test_a_source_record_chained_twice_fails_verification_even_when_links_hold() -> None:
    chain = make_chain(10)
    chain[6] = dataclasses.replace(chain[6], topic=chain[2].topic, partition=chain[2].partition, offset=chain[2].offset)
    chain = rehash_from(chain, 6)
    problems = duplicate_sources(chain)
    assert [(p.kind, p.sequences) for p in problems] == [("duplicate_source", (2, 6))]
    report = verify_entries(chain, "memory")
    assert report.first_break is None
    assert not report.ok
    assert report.to_json()["source_problem_counts"] == {"duplicate_source": 1}
