"""The pure mapping functions between A2A parts and OpenCode prompt parts, tools and usage."""

from __future__ import annotations

import base64

import pytest
from a2a.types.a2a_pb2 import Part
from google.protobuf.struct_pb2 import Value

from opencode_a2a_server.errors import InvalidRequest
from opencode_a2a_server.execution.mapping import (
    TITLE_LIMIT,
    prompt_parts,
    session_title,
    text_of_parts,
    tool_call_data,
    usage_of,
)

from .recordings import load_events, stored_history

# -- prompt_parts -------------------------------------------------------------------


def test_text_parts_pass_through_in_order():
    parts = [Part(text="first"), Part(text="second\nline")]
    assert prompt_parts(parts) == [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second\nline"},
    ]


def test_raw_bytes_become_a_data_url_with_their_media_type():
    payload = b"\x89PNG\r\n\x1a\n\x00binary"
    part = Part(raw=payload, media_type="image/png", filename="pic.png")
    [out] = prompt_parts([Part(text="look"), part])[1:]
    assert out["type"] == "file"
    assert out["mime"] == "image/png"
    assert out["filename"] == "pic.png"
    prefix = "data:image/png;base64,"
    assert out["url"].startswith(prefix)
    assert base64.b64decode(out["url"][len(prefix) :]) == payload


def test_raw_bytes_without_a_media_type_are_octet_stream():
    [out] = prompt_parts([Part(raw=b"abc")])
    assert out == {
        "type": "file",
        "mime": "application/octet-stream",
        "url": "data:application/octet-stream;base64,YWJj",
    }
    assert "filename" not in out


def test_urls_pass_through():
    part = Part(url="https://example.com/a.pdf", media_type="application/pdf", filename="a.pdf")
    [out] = prompt_parts([part])
    assert out == {
        "type": "file",
        "mime": "application/pdf",
        "url": "https://example.com/a.pdf",
        "filename": "a.pdf",
    }


def test_a_file_alone_is_enough():
    assert prompt_parts([Part(url="file:///tmp/x.txt", media_type="text/plain")])[0]["type"] == (
        "file"
    )


def test_data_parts_are_refused_with_their_index():
    data = Value()
    data.struct_value.update({"k": "v"})
    with pytest.raises(InvalidRequest, match=r"Part 1 is a data part"):
        prompt_parts([Part(text="hi"), Part(data=data)])


def test_a_part_without_content_is_refused():
    with pytest.raises(InvalidRequest, match=r"Part 0 is empty"):
        prompt_parts([Part()])


def test_no_parts_are_refused():
    with pytest.raises(InvalidRequest, match="no parts"):
        prompt_parts([])


@pytest.mark.parametrize("texts", [[""], ["   "], [" ", "\n\t"]])
def test_blank_text_is_refused(texts):
    with pytest.raises(InvalidRequest, match="text is empty"):
        prompt_parts([Part(text=t) for t in texts])


def test_refusals_are_invalid_request_errors():
    with pytest.raises(InvalidRequest) as info:
        prompt_parts([])
    assert info.value.error_type == "INVALID_REQUEST"


# -- session_title ------------------------------------------------------------------


def test_title_is_the_first_non_blank_text_with_whitespace_collapsed():
    parts = [
        {"type": "text", "text": "   "},
        {"type": "text", "text": "  Fix\n the   build\tplease "},
        {"type": "text", "text": "ignored"},
    ]
    assert session_title(parts) == "Fix the build please"


def test_title_is_cut_to_the_limit():
    title = session_title([{"type": "text", "text": "word " * 100}])
    assert len(title) == TITLE_LIMIT
    assert title.startswith("word word")


def test_title_of_files_only_names_them():
    parts = [
        {"type": "file", "mime": "image/png", "url": "data:,", "filename": "a.png"},
        {"type": "file", "mime": "text/plain", "url": "https://x/y"},
    ]
    assert session_title(parts) == "a.png, file"


def test_title_fallback():
    assert session_title([]) == "A2A session"


# -- tool_call_data -----------------------------------------------------------------


def _tool_parts(name: str) -> list[dict]:
    return [
        e["properties"]["part"]
        for e in load_events(name)
        if e["type"] == "message.part.updated" and e["properties"]["part"]["type"] == "tool"
    ]


def test_tool_call_data_follows_the_recorded_bash_call():
    pending, running, *_, completed = _tool_parts("tool_bash_default")
    assert tool_call_data(pending) == {
        "call_id": "call_1795607995951",
        "tool": "bash",
        "status": "pending",
    }
    assert tool_call_data(running) == {
        "call_id": "call_1795607995951",
        "tool": "bash",
        "status": "running",
        "input": {"command": "echo hi"},
    }
    assert tool_call_data(completed) == {
        "call_id": "call_1795607995951",
        "tool": "bash",
        "status": "completed",
        "title": "echo hi",
        "input": {"command": "echo hi"},
        "output": "hi\n",
    }


def test_tool_call_data_carries_the_error_and_falls_back_to_the_part_id():
    part = {
        "id": "prt_1",
        "type": "tool",
        "tool": "bash",
        "state": {
            "status": "error",
            "input": {"command": "pwd"},
            "error": "Tool execution aborted",
            "metadata": {"interrupted": True},
        },
    }
    assert tool_call_data(part) == {
        "call_id": "prt_1",
        "tool": "bash",
        "status": "error",
        "input": {"command": "pwd"},
        "error": "Tool execution aborted",
    }


def test_tool_call_data_survives_a_missing_state():
    assert tool_call_data({"id": "prt_2", "tool": "x", "state": None}) == {
        "call_id": "prt_2",
        "tool": "x",
        "status": None,
    }


# -- usage_of -----------------------------------------------------------------------


def test_usage_sums_the_turns_assistant_messages():
    history = stored_history(load_events("tool_bash_default"), "ses_ded6c5a1effekAByTn1KASo9Wc")
    infos = [entry["info"] for entry in history if entry["info"]["role"] == "assistant"]
    assert len(infos) == 2
    assert usage_of(infos) == {
        "input_tokens": 30,
        "output_tokens": 15,
        "reasoning_tokens": 0,
        "cache_tokens": {"read_tokens": 0, "write_tokens": 0},
        "total_tokens": 45,
        "cost": 0.0,
    }


def test_usage_counts_cache_reasoning_and_cost_and_derives_a_missing_total():
    infos = [
        {
            "tokens": {"input": 7, "output": 3, "reasoning": 2, "cache": {"read": 5, "write": 1}},
            "cost": 0.25,
        },
        {"tokens": {"input": 1, "output": 1}, "cost": 0.5},
        {"role": "assistant"},  # no tokens: ignored
    ]
    usage = usage_of(infos)
    assert usage["input_tokens"] == 8
    assert usage["output_tokens"] == 4
    assert usage["reasoning_tokens"] == 2
    assert usage["cache_tokens"] == {"read_tokens": 5, "write_tokens": 1}
    assert usage["total_tokens"] == 12  # no `total` given: input + output
    assert usage["cost"] == pytest.approx(0.75)


def test_usage_is_none_without_token_counts():
    assert usage_of([]) is None
    assert usage_of([{"role": "assistant", "tokens": None}, {"tokens": "bad"}]) is None


# -- text_of_parts ------------------------------------------------------------------


def test_text_of_parts_skips_synthetic_ignored_empty_and_other_kinds():
    parts = [
        {"type": "step-start"},
        {"type": "text", "text": "one"},
        {"type": "text", "text": "The following tool was executed by the user", "synthetic": True},
        {"type": "text", "text": "hidden", "ignored": True},
        {"type": "text", "text": ""},
        {"type": "reasoning", "text": "thinking"},
        {"type": "text", "text": "two"},
    ]
    assert text_of_parts(parts) == ["one", "two"]
    assert text_of_parts(parts, "reasoning") == ["thinking"]


def test_text_of_parts_over_a_recorded_reasoning_message():
    history = stored_history(load_events("reasoning"), "ses_ded6cb915ffekD5oX0U2zLY177")
    [assistant] = [entry for entry in history if entry["info"]["role"] == "assistant"]
    assert text_of_parts(assistant["parts"], "reasoning") == ["Let me think about this. "]
    assert text_of_parts(assistant["parts"]) == [
        "Hello from fake LLM. You said: think first [[reason]]"
    ]
