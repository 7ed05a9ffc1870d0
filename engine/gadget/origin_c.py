"""The C text of each rewritten buffer write (engine/gadget/origin.py): statement expressions
over the helpers of engine/bcc/origin_prelude.py. ``begin`` is the C condition that fills
``__engine_o`` and says whether the record may be written; ``index`` is the map's number.
"""

from __future__ import annotations


def written(index: int, begin: str, write: str, dead: str) -> str:
    """Origin, then ``write`` (which sets ``__engine_r``); a failed write is counted."""
    return (
        f"({{ long __engine_r = 0; struct engine_origin __engine_o; if ({begin}) {{ {write} "
        f"if (__engine_r < 0) engine_count_lost({index}); }} {dead} __engine_r; }})"
    )


def staged(data: str, size: str, write: str) -> str:
    """Origin and record copied into a free stage of this CPU, then ``write`` from it, with
    ``__engine_n`` the header and the record's size."""
    return (
        "struct engine_stage *__engine_s = engine_stage_claim(); "
        f"if (__engine_s) {{ u32 __engine_n = ({size}); "
        "if (__engine_n < ENGINE_DATA_MAX) { __engine_n &= ENGINE_DATA_MAX - 1; "
        "__engine_s->o = __engine_o; "
        f"bpf_probe_read_kernel(__engine_s->data, __engine_n, {data}); "
        f"__engine_n += ENGINE_HDR; {write} }} else __engine_r = -7; "
        "engine_stage_release(__engine_s); } else __engine_r = -16;"
    )


def reserve(index: int, begin: str, size: str) -> str:
    # The gadget gets a stage's room, not ring memory: the 6.1 verifier does not know that a
    # reservation checked non-null is non-null, so the gadget's own check after the engine's
    # would fail there; a map value it knows. The ring space is taken at submit.
    return (
        f"({{ void *__engine_p = 0; struct engine_origin __engine_o; if ({begin}) {{ "
        "struct engine_stage *__engine_s = engine_stage_claim(); "
        f"if (__engine_s && ({size}) < ENGINE_DATA_MAX) {{ __engine_s->o = __engine_o; "
        f"__engine_s->size = ({size}); __engine_p = __engine_s->data; }} else {{ "
        f"if (__engine_s) engine_stage_release(__engine_s); engine_count_lost({index}); }} }} "
        "__engine_p; })"
    )


def submit(name: str, index: int, pointer: str, flags: str) -> str:
    return (
        f"({{ struct engine_stage *__engine_s = ENGINE_STAGE_OF({pointer}); "
        "u32 __engine_n = __engine_s->size; long __engine_r = -7; "
        "if (__engine_n < ENGINE_DATA_MAX) { __engine_n &= ENGINE_DATA_MAX - 1; "
        f"__engine_r = {name}.ringbuf_output(engine_raw(&__engine_s->o), "
        f"ENGINE_HDR + __engine_n, {flags}); }} engine_stage_release(__engine_s); "
        f"if (__engine_r < 0) engine_count_lost({index}); "
        f"if (0) {name}.ringbuf_submit(({pointer}) + 0, {flags}); }})"
    )


def output(name: str, index: int, begin: str, args: tuple[str, ...]) -> str:
    data, size, flags = args
    # A size known when compiling: reserve header + record in the ring and fill it in place.
    fixed = (
        f"({{ long __engine_f = 0; "
        f"void *__engine_p = {name}.ringbuf_reserve(ENGINE_HDR + ({size})); "
        "if (__engine_p) { *(struct engine_origin *)__engine_p = __engine_o; "
        f"{copy('__engine_p + ENGINE_HDR', data, size)}; "
        f"{name}.ringbuf_submit(__engine_p, {flags}); }} else __engine_f = -11; __engine_f; }})"
    )
    # A size known only at run time: through a stage.
    write = f"__engine_r = {name}.ringbuf_output(engine_raw(&__engine_s->o), __engine_n, {flags});"
    variable = f"({{ long __engine_r = 0; {staged(data, size, write)} __engine_r; }})"
    dead = f"if (0) {name}.ringbuf_output(({data}) + 0, {size}, {flags});"
    choose = (
        f"__engine_r = __builtin_choose_expr(__builtin_constant_p({size}), {fixed}, {variable});"
    )
    return written(index, begin, choose, dead)


def copy(dst: str, src: str, size: str) -> str:
    # The condition is constant even where `size` is not: clang checks the arm it does not
    # choose too, so `__builtin_constant_p(size) && size <= N` would not compile.
    return (
        f"__builtin_choose_expr((__builtin_constant_p({size}) ? ({size}) : ENGINE_DATA_MAX) "
        f"<= ENGINE_INLINE_COPY, __builtin_memcpy({dst}, {src}, {size}), "
        f"(void)bpf_probe_read_kernel({dst}, {size}, {src}))"
    )
