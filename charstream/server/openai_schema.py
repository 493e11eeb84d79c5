"""Requests to the server, checked field by field: OpenAI's completions body and `/generate`'s query.

Anything wrong raises RequestError, which the app sends as OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, with a 400 (or the status it carries).
"""
import math
from dataclasses import dataclass
from typing import Optional

from .. import samplers

MAX_TOKENS = 1_000_000      # the most characters one request may ask for (max_tokens, length)
DEFAULT_MAX_TOKENS = 16     # OpenAI's default for /v1/completions
MAX_STOPS = 4               # OpenAI's limit on stop sequences
MAX_STOP_LENGTH = 256       # characters in one stop sequence (text that may begin one is held back)
MAX_TOP_K = 0x110000        # top_k (any k from the vocabulary's size up cuts nothing)
MAX_SEED = 2**64 - 1        # seed, random_seed: what numpy's generator takes as one 64-bit word
MAX_N = 16                  # the most choices (n) one completion may ask for; each takes a --parallel slot

# OpenAI fields charstream has no use for: accepted at the value that changes nothing, refused otherwise.
NEUTRAL = {"echo": (False,), "logprobs": (None, 0), "presence_penalty": (0,),
           "frequency_penalty": (0,), "logit_bias": (None, {}), "suffix": (None, "")}


class RequestError(Exception):
    """A request the server refuses; its message is one line."""

    def __init__(self, message, param=None, code=None, status=400, type="invalid_request_error"):
        message = _one_line(message)   # messages quote what the client sent: a name may hold anything
        param = param if param is None else _one_line(param, 100)
        super().__init__(message)
        self.param, self.code, self.status, self.type = param, code, status, type

    def body(self):
        return error_body(str(self), self.type, self.param, self.code)


def _one_line(text, limit=300):
    """text with its line breaks and control characters escaped, cut to `limit` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


def error_body(message, type="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class Generation:
    """One generation as the model is asked for it (the arguments of `Model.generate_blocks`, and the ends)."""

    prompt: str
    length: Optional[int]          # characters after the prompt; None: until the client leaves
    temperature: float = 1.0
    sampler: Optional[str] = None  # None: temperature
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    random_seed: Optional[int] = None
    stop: tuple = ()               # cut the text before the first of these
    stream: bool = False
    include_usage: bool = False    # stream_options.include_usage: a last chunk with the usage
    n: int = 1                     # choices: choice i has random seed (random_seed + i) mod 2**64

    def choice_seed(self, i):
        """Choice i's random seed: the request's plus i, mod 2**64 (None: each draws its own entropy)."""
        return None if self.random_seed is None else (self.random_seed + i) % (MAX_SEED + 1)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v, name, lo, hi=None):
    if not _is_int(v):
        raise RequestError(f"{name} must be an integer, got {v!r}", name, "invalid_type")
    if v < lo or (hi is not None and v > hi):
        bound = f"at least {lo}" if hi is None else f"between {lo} and {hi:_}".replace("_", ",")
        raise RequestError(f"{name} must be {bound}, got {v}", name, "invalid_value")
    return v


def _temperature(v, name, zero_ok):
    if not _is_number(v) or not math.isfinite(v):
        raise RequestError(f"{name} must be a finite number, got {v!r}", name, "invalid_type")
    if v < 0 or (v == 0 and not zero_ok):
        raise RequestError(f"{name} must be {'at least 0' if zero_ok else 'above 0'}, got {v}", name, "invalid_value")
    if v > 0:
        try:
            samplers.check_temperature(v)
        except ValueError as e:
            raise RequestError(f"{name} {v} is too small (its inverse overflows)", name, "invalid_value") from None
    return float(v)


def _same(v, a):
    """v is the neutral value a: numbers by value (not booleans), the rest by type and value."""
    if _is_number(a):
        return _is_number(v) and v == a
    return type(v) is type(a) and v == a


def _top_p(v, name="top_p", one_cuts_nothing=True):
    if not _is_number(v) or not math.isfinite(v):
        raise RequestError(f"{name} must be a number, got {v!r}", name, "invalid_type")
    if not 0 < v <= 1:
        raise RequestError(f"{name} must be in (0, 1], got {v}", name, "invalid_value")
    return None if v == 1 and one_cuts_nothing else float(v)   # 1 cuts nothing: the compiled sampler


def parse_completion(body, model_id):
    """A Generation from the JSON body of `POST /v1/completions` (already decoded)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None, "invalid_type")
    for name in body:
        if name not in FIELDS:
            raise RequestError(f"unrecognized request argument supplied: {name}", name, "unknown_parameter")
    for name, allowed in NEUTRAL.items():
        if name in body and not any(_same(body[name], a) for a in allowed):
            raise RequestError(f"{name}={body[name]!r} is not supported (only {allowed[0]!r})", name,
                               "unsupported_value")
    model = body.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise RequestError(f"model must be a string, got {model!r}", "model", "invalid_type")
        if model != model_id:
            raise RequestError(f"the model {model!r} does not exist (this server has {model_id!r})",
                               "model", "model_not_found")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string (or a list of one string)", "prompt", "invalid_type")
    max_tokens = body.get("max_tokens")
    length = DEFAULT_MAX_TOKENS if max_tokens is None else _int(max_tokens, "max_tokens", 0, MAX_TOKENS)
    t = body.get("temperature")
    t = 1.0 if t is None else _temperature(t, "temperature", zero_ok=True)
    sampler = None
    if t == 0:
        sampler, t = "greedy", 1.0     # OpenAI's temperature 0: always the most probable character
    top_p = body.get("top_p")
    top_p = None if top_p is None else _top_p(top_p)
    top_k = body.get("top_k")
    top_k = None if top_k is None else _int(top_k, "top_k", 1, MAX_TOP_K)
    seed = body.get("seed")
    seed = None if seed is None else _int(seed, "seed", 0, MAX_SEED)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, got {stream!r}", "stream", "invalid_type")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"} \
                or not isinstance(options.get("include_usage", False), bool):
            raise RequestError("stream_options must be {\"include_usage\": true|false}", "stream_options", "invalid_type")
        include_usage = options.get("include_usage", False)
    n = body.get("n")
    n = 1 if n is None else _int(n, "n", 1, MAX_N)
    best_of = body.get("best_of")
    if best_of is not None:
        _int(best_of, "best_of", 1, MAX_N)
        if best_of != n:
            raise RequestError(f"best_of must equal n ({n}), got {best_of}: every choice generated is returned",
                               "best_of", "invalid_value")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError(f"user must be a string, got {user!r}", "user", "invalid_type")
    return Generation(prompt, length, t, sampler, top_k, top_p, seed, _stops(body.get("stop")),
                      bool(stream), include_usage, n)


FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
          "stream_options", "user", "n", "best_of", *NEUTRAL}


def _stops(stop):
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("stop must be a string or a list of strings", "stop", "invalid_type")
    if len(stops) > MAX_STOPS:
        raise RequestError(f"stop holds at most {MAX_STOPS} sequences, got {len(stops)}", "stop", "invalid_value")
    if any(s == "" for s in stops):
        raise RequestError("a stop sequence cannot be empty", "stop", "invalid_value")
    if any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise RequestError(f"a stop sequence has at most {MAX_STOP_LENGTH} characters", "stop", "invalid_value")
    return tuple(stops)


GENERATE_PARAMS = ("prompt", "seed", "length", "temperature", "top_k", "top_p", "sampler", "random_seed")


def parse_generate(query):
    """A Generation from the query of `GET /generate` (a mapping of str to list of str, or to str)."""
    for name in query:
        if name not in GENERATE_PARAMS:
            raise RequestError(f"unknown parameter {name!r} (known: {', '.join(GENERATE_PARAMS)})", name,
                               "unknown_parameter")

    def one(name):
        v = query.get(name)
        if isinstance(v, (list, tuple)):
            if len(v) != 1:
                raise RequestError(f"{name} is given {len(v)} times", name, "invalid_value")
            v = v[0]
        return v

    def number(name, cast):
        v = one(name)
        if v is None:
            return None
        try:
            return cast(v)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise RequestError(f"{name} must be {kind}, got {v!r}", name, "invalid_type") from None

    length = number("length", int)
    if length is not None:
        _int(length, "length", 0, MAX_TOKENS)
    t = number("temperature", float)
    top_k, top_p, seed = number("top_k", int), number("top_p", float), number("random_seed", int)
    if one("prompt") is not None and one("seed") is not None:
        raise RequestError("give prompt or its old spelling seed, not both", "seed", "invalid_value")
    return Generation(
        prompt=one("prompt") or one("seed") or "",   # `seed`: the old spelling of the prompt, kept
        length=length,
        temperature=1.0 if t is None else _temperature(t, "temperature", zero_ok=False),
        sampler=one("sampler") or None,
        top_k=None if top_k is None else _int(top_k, "top_k", 1, MAX_TOP_K),
        top_p=None if top_p is None else _top_p(top_p, one_cuts_nothing=False),   # as generate does
        random_seed=None if seed is None else _int(seed, "random_seed", 0, MAX_SEED),
        stream=True,
    )
