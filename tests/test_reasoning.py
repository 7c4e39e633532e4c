"""Streaming reasoning/answer splitter for M1 output, and the <tool_calls> parser."""
import pytest

from engine.text.reasoning import Event, ReasoningSplitter, split

# (generated text, starts_in_reasoning, expected reasoning, expected answer, reasoning unfinished)
CASES = {
    "m1_format": ("<think>\nI think.\n</think>\nThe answer.", False, "I think.", "The answer.", False),
    "no_newlines": ("<think>plan</think>answer", False, "plan", "answer", False),
    "leading_whitespace": ("\n  <think>\nr\n</think>\na", False, "r", "a", False),
    "multiline": ("<think>\nline 1\n\nline 2\n</think>\n\nPara 1\n</think>", False, "line 1\n\nline 2",
                  "\nPara 1\n</think>", False),
    "no_open_tag": ("Just an answer </think> with a stray tag", False, "", "Just an answer </think> with a stray tag",
                    False),
    "starts_in_reasoning": ("still thinking\n</think>\nanswer", True, "still thinking", "answer", False),
    "starts_in_reasoning_with_tag": ("<think>\nr\n</think>\na", True, "r", "a", False),
    "close_never_comes": ("<think>\nlong reasoning cut at max_tokens\n</thi", False,
                          "long reasoning cut at max_tokens\n</thi", "", True),
    "open_tag_only": ("<think>", False, "", "", True),
    "partial_open_tag_is_answer": ("<thi", False, "", "<thi", False),
    "lookalike_tags": ("<think>a </thinking> <b>\n</think>\n<thinker>", False, "a </thinking> <b>", "<thinker>", False),
    "empty_reasoning": ("<think>\n</think>\nok", False, "", "ok", False),
    "empty": ("", False, "", "", False),
    "tool_call_after_think": ('<think>\nneed weather\n</think>\n<tool_calls>\n{"name": "w", "arguments": {}}\n'
                              "</tool_calls>", False, "need weather",
                              '<tool_calls>\n{"name": "w", "arguments": {}}\n</tool_calls>', False),
}


def run(deltas, starts_in_reasoning):
    splitter = ReasoningSplitter(starts_in_reasoning)
    events = [e for d in deltas for e in splitter.feed(d)] + splitter.finish()
    return splitter, events


def joined(events, kind):
    return "".join(e.text for e in events if e.kind == kind)


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_whole_text(name):
    text, flag, reasoning, answer, unfinished = CASES[name]
    assert split(text, flag) == (reasoning, answer)
    splitter, _ = run([text], flag)
    assert splitter.reasoning_unfinished is unfinished


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_split_point(name):
    text, flag, reasoning, answer, unfinished = CASES[name]
    for cut in range(len(text) + 1):
        splitter, events = run([text[:cut], text[cut:]], flag)
        assert (joined(events, "reasoning"), joined(events, "answer")) == (reasoning, answer), cut
        assert (splitter.reasoning_text, splitter.answer_text) == (reasoning, answer), cut
        assert splitter.reasoning_unfinished is unfinished


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_character_at_a_time(name):
    text, flag, reasoning, answer, _ = CASES[name]
    _, events = run(list(text), flag)
    assert (joined(events, "reasoning"), joined(events, "answer")) == (reasoning, answer)
    kinds = [e.kind for e in events]
    first_answer = kinds.index("answer") if "answer" in kinds else len(kinds)
    assert "reasoning" not in kinds[first_answer:]


def test_events_stream_without_waiting_for_the_close_tag():
    splitter = ReasoningSplitter()
    assert splitter.feed("<think>\nStep one") == [Event("reasoning", "Step one")]
    assert splitter.in_reasoning
    assert splitter.feed(". Step two\n</th") == [Event("reasoning", ". Step two")]  # "\n</th" may be the tag
    assert splitter.feed("ink>\nThe") == [Event("answer", "The")]
    assert not splitter.in_reasoning
    assert splitter.feed(" end.") == [Event("answer", " end.")]
    assert splitter.finish() == []
    assert not splitter.reasoning_unfinished


def test_newline_that_is_not_part_of_the_close_tag_is_released():
    splitter = ReasoningSplitter()
    splitter.feed("<think>\na\n")
    assert splitter.reasoning_text == "a"
    assert splitter.feed("b") == [Event("reasoning", "\nb")]


def test_in_reasoning_before_any_decision():
    assert not ReasoningSplitter().in_reasoning
    assert ReasoningSplitter(starts_in_reasoning=True).in_reasoning


def test_feed_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        ReasoningSplitter().feed(b"<think>")
