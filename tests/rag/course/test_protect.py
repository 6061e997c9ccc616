"""The protected-list guard: matching that survives formatting, and withholding by sentence."""

from __future__ import annotations

from rag.course.protect import WITHHELD, ProtectedGuard


def test_an_item_is_found_whatever_its_formatting():
    guard = ProtectedGuard(["65,536", "r * (d + k)"])
    assert guard.leaks("It adds **65536** parameters.") == ["65,536"]
    assert guard.leaks("It adds 65 536 parameters.") == ["65,536"]
    assert guard.leaks("use R * (D + K) here") == ["r * (d + k)"]


def test_a_number_inside_a_longer_number_is_not_an_item():
    assert not ProtectedGuard(["42"]).leaks("There are 1420 tokens and 4.2 seconds.")


def test_only_the_sentences_holding_an_item_are_withheld():
    guard = ProtectedGuard(["65,536"])
    text = "LoRA trains two small matrices. Here that is 65,536 parameters. Read section 4."
    assert guard.withhold(text) == (
        f"LoRA trains two small matrices. {WITHHELD} Read section 4."
    )


def test_an_empty_list_checks_nothing():
    guard = ProtectedGuard(["", "  "])
    assert not guard and guard.withhold("anything 42") == "anything 42"
