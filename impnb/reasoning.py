"""Split a reply into its reasoning and its content (the user-facing answer), for channel-trained chat models.

An engine once only stripped the channel markers and left every channel's body in the answer, so the chain of
thought showed up ahead of the final answer. The layouts handled:

  * Gemma-4:  ``<|channel>thought\\n BODY <channel|> ANSWER`` -- a header ``<|channel>NAME`` opens a channel; a bare
    ``<channel|>`` ENDS the current channel and hands back to the default (answer) channel.
  * gpt-oss (harmony): ``<|channel|>analysis<|message|> BODY <|end|><|start|>assistant<|channel|>final<|message|>
    ANSWER <|return|>`` (an optional ``<|constrain|>...`` may sit between the name and ``<|message|>``).
  * ``<think> BODY </think> ANSWER`` (Qwen3, DeepSeek-R1); a lone ``</think>`` closes a block the prompt opened.
Channels named thought / analysis / reasoning / think go to reasoning; every other channel, and text outside
channels, goes to the content. Text without any marker is all content.
"""
from __future__ import annotations

import re

REASONING_CHANNELS = frozenset({"thought", "thinking", "analysis", "reasoning", "think"})

_HARMONY = re.compile(r"<\|channel\|>(\w+)(?:\s*<\|constrain\|>\S*)?\s*<\|message\|>(.*?)"
                      r"(?=<\|end\|>|<\|start\|>|<\|return\|>|<\|call\|>|$)", re.S)
_GEMMA4 = re.compile(r"<\|channel>(\w*)|<channel\|>")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, content) of a generated reply; see the module docstring for the layouts."""
    if "<|channel|>" in text:
        return _split_harmony(text)
    if "<|channel>" in text or "<channel|>" in text:
        return _split_gemma4(text)
    if "<think>" in text or "</think>" in text:
        return _split_think(text)
    return "", text


def _join(parts: list[str]) -> str:
    return "\n".join(p.strip() for p in parts if p.strip())


def _split_harmony(text: str) -> tuple[str, str]:
    reasoning, content = [], []
    for name, body in _HARMONY.findall(text):
        (reasoning if name.lower() in REASONING_CHANNELS else content).append(body)
    return _join(reasoning), _join(content)


def _split_gemma4(text: str) -> tuple[str, str]:
    reasoning, content = [], []
    channel, pos = "", 0
    for marker in _GEMMA4.finditer(text):
        (reasoning if channel in REASONING_CHANNELS else content).append(text[pos:marker.start()])
        channel = (marker.group(1) or "").lower() if marker.group(0).startswith("<|channel>") else ""
        pos = marker.end()
    (reasoning if channel in REASONING_CHANNELS else content).append(text[pos:])
    return _join(reasoning), _join(content)


def _split_think(text: str) -> tuple[str, str]:
    head, closed, tail = text.partition("</think>")
    if closed and "<think>" not in head:  # the prompt opened the block: everything before </think> is reasoning
        return head.strip(), _split_think(tail)[1]
    reasoning = _THINK.findall(text)
    return _join(reasoning), _THINK.sub("", text).strip()
