"""Guards: what a cosine cannot see. Each case is a general pattern, written here (not from a data set)."""

from __future__ import annotations

import pytest

from engine.semantic.guards import Facts, check, facts


def verdict(a: str, b: str) -> str | None:
    return check(facts(a), facts(b))


@pytest.mark.parametrize(("a", "b", "guard"), [
    ("How many grams are in 3 ounces?", "How many grams are in 4 ounces?", "numbers"),
    ("What is 7 plus 9?", "What is seven plus nine?", None),
    ("Solve 4y + 1 = 9", "Solve 4y - 1 = 9", "numbers"),
    ("Which metals do not rust?", "Which metals rust?", "negation"),
    ("Translate into Greek: 'the bus is late'", "Translate into Greek: 'the train is late'", "quotes"),
    ("What does `ls -la` print?", "What does `ls -l` print?", "code"),
    ("What is the population of Austria?", "What is the population of Australia?", "entities"),
    ("How do I parse dates in Kotlin?", "How do I parse dates in Swift?", "entities"),
    ("Translate 'hello' into Korean.", "Translate 'hello' into Russian.", "entities"),
    ("Sort the names in ascending order.", "Sort the names in descending order.", "direction"),
    ("What are the advantages of remote work?", "What are the disadvantages of remote work?", "direction"),
    ("Convert 3 liters to gallons.", "Convert 3 gallons to liters.", "edit"),
    ("Write a sonnet about autumn leaves.", "Write a ballad about autumn leaves.", "edit"),
    ("Please write a sonnet about autumn leaves. Thanks!", "write a sonnet about autumn leaves", None),
    ("How do I delete a directory in bash?", "how do i delte a directory in bash", None),
])
def test_guard_verdicts(a: str, b: str, guard: str | None) -> None:
    assert verdict(a, b) == guard
    assert verdict(b, a) == guard  # symmetric


def test_material_must_be_identical_while_the_request_may_be_reworded() -> None:
    passage = ("The library will close at 6 pm on weekdays from March onwards, and stay open until 9 pm on "
               "Saturdays, while Sunday hours remain unchanged for the rest of the year.")
    changed = passage.replace("Saturdays", "Fridays")
    summary = f"Give me a short summary of the notice below.\n\n{passage}"
    assert verdict(f"Summarize this notice:\n\n{passage}", summary) != "material"
    assert verdict(f"Summarize this notice:\n\n{passage}", f"Summarize this notice:\n\n{changed}") == "material"
    # the request may come after the passage
    assert facts(f"{passage}\n\nSummarize this.").material == facts(f"Summarize this.\n\n{passage}").material


def test_facts_round_trip_through_json() -> None:
    f = facts("Translate 'good night' into German, please, in 2 versions, not formal.")
    assert Facts.from_json(f.to_json()) == f


def test_cjk_numerals_and_order_of_numbers() -> None:
    assert facts("写一首七言绝句").numbers != facts("写一首五言绝句").numbers
    took_two, took_four = "箱に7個あります。2個取って、4個入れました。", "箱に7個あります。4個取って、2個入れました。"
    assert verdict(took_two, took_four) == "edit"


PASSAGE = ("\n\nHi Marco, the bike shop called: your frame is cracked near the bottom bracket and can't be "
           "welded safely. They can order a replacement frame for 240 euros. Let me know by Thursday. - Elena")


@pytest.mark.parametrize(("a", "b", "guard"), [
    # one shared passage dominates the cosine: a changed request around it is a different request
    ("Summarize this email in Spanish:" + PASSAGE, "Translate this email into Spanish:" + PASSAGE, "edit"),
    ("Summarize this email as a formal one-page memo:" + PASSAGE,
     "Summarize this email as a single tweet:" + PASSAGE, "edit"),
    # ... while a reworded request around it still passes
    ("Summarize this email:" + PASSAGE, "Could you give me a short summary of this email, please?" + PASSAGE, None),
])
def test_requests_around_a_shared_passage(a: str, b: str, guard: str | None) -> None:
    assert verdict(a, b) == guard
