"""Pieces of the host's backup tool that need no host (the lab tests run the rest for real)."""

from govmail.host.backup import uid_ranges


def test_uids_are_sent_to_doveadm_as_compact_imap_sets_in_bounded_chunks():
    assert uid_ranges([7, 1, 2, 3, 9, 10]) == ["1:3,7,9:10"]
    assert uid_ranges([5]) == ["5"] and uid_ranges([]) == []
    sets = uid_ranges(list(range(1, 3001, 2)))  # 1500 single UIDs
    assert len(sets) == 3 and all(s.count(",") == 499 for s in sets)
