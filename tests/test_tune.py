"""The autotuner: built-in rule, wisdom file (written, used, refused when corrupt or
foreign), progress bar, and that every schedule it may pick computes the right thing;
bands, the rule and wisdom per dtype pair."""
import dataclasses
import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import softgen
from softgen import api, tune
from softgen.backends.c import ISAS, rendered_schedule
from softgen.lower import Schedule
from reference import check, enabled, special_rows

TINY = dict(budget=0.001, progress=False)


@pytest.fixture
def wisdom(tmp_path, monkeypatch):
    """A private wisdom file for the test; auto choices start afresh and end afresh."""
    path = tmp_path / "cache" / "wisdom.json"
    monkeypatch.setenv(tune.WISDOM_ENV, str(path))
    tune.refresh()
    yield path
    monkeypatch.undo()
    tune.refresh()


def test_wisdom_path_follows_env_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv(tune.WISDOM_ENV, str(tmp_path / "w.json"))
    assert tune.wisdom_path() == tmp_path / "w.json"
    monkeypatch.delenv(tune.WISDOM_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tune.wisdom_path() == tmp_path / "xdg" / "softgen" / "wisdom.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tune.wisdom_path() == tmp_path / "home" / ".cache" / "softgen" / "wisdom.json"


@pytest.mark.parametrize("op,rows,n,algorithm,nontemporal", [
    ("softmax", 4096, 64, "three_pass_reload", False),
    ("softmax", 1, 1 << 20, "three_pass_reload", False),
    ("log_softmax", 100, 1000, "three_pass_recompute", False),
    ("softmax", 16, 1 << 22, "two_pass", True),
    ("logsumexp", 1, 1 << 26, "two_pass", False),
    ("logsumexp", 64, 1000, "two_pass", False),
    ("logsumexp", 4096, 64, "three_pass_recompute", False),
])
def test_builtin_rule_without_wisdom(wisdom, monkeypatch, op, rows, n, algorithm, nontemporal):
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)  # the rule's split, whatever the CPU
    choice = tune.choose(op, rows, n)
    assert choice == tune.builtin(op, rows, n)
    assert (choice.algorithm, choice.schedule.nontemporal) == (algorithm, nontemporal)


def test_bands_split_by_row_length_and_residency(monkeypatch):
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    assert tune.band("softmax", 10, 64) == tune.band("softmax", 3, 33) != tune.band("softmax", 10, 65)
    assert tune.band("softmax", 1, 1 << 20).endswith("cache")
    assert tune.band("softmax", 1 << 10, 1 << 20).endswith("memory")
    assert tune.band("softmax", 1, 64) != tune.band("logsumexp", 1, 64)


def test_tune_saves_wisdom_that_auto_then_uses(wisdom, few_candidates):
    results = softgen.tune("softmax", shapes=[(8, 40)], **TINY)  # the module is callable
    key = tune.band("softmax", 8, 40)
    assert set(results) == {key}
    choice, speed = results[key]
    assert speed > 0 and choice in tune.candidates("softmax", 8, 40)
    data = json.loads(wisdom.read_text())
    assert data["version"] == tune.WISDOM_VERSION
    entries = data["targets"][tune.target_key(softgen.Target.parse("host"))]
    assert tune.Choice.from_json(entries[key]["choice"]) == choice
    assert tune.choose("softmax", 8, 40) == choice
    x = (np.random.default_rng(0).standard_normal((8, 40)) * 4).astype(np.float32)
    kernel = api._kernel_for("softmax", "auto", x, 1)
    assert (kernel.algorithm, kernel.schedule) == (choice.algorithm, choice.schedule)
    check("softmax", x, softgen.softmax(x))


def test_auto_follows_hand_written_wisdom(wisdom):
    """The choice in the file is what runs (an unusual one, so it cannot be the rule's)."""
    odd = tune.Choice("online", Schedule(unroll=3, block=96))
    tune.save_wisdom(wisdom, softgen.Target.parse("host"), {tune.band("log_softmax", 5, 300): (odd, 1.0)})
    x = (np.random.default_rng(1).standard_normal((5, 300)) * 4).astype(np.float32)
    kernel = api._kernel_for("log_softmax", "auto", x, 1)
    assert (kernel.algorithm, kernel.schedule) == ("online", odd.schedule)
    check("log_softmax", x, softgen.log_softmax(x))
    assert tune.choose("log_softmax", 5, 3000) == tune.builtin("log_softmax", 5, 3000)  # other band


def test_saving_keeps_other_targets_entries(wisdom, few_candidates):
    wisdom.parent.mkdir(parents=True)
    other = {"version": tune.WISDOM_VERSION, "targets": {"riscv64/x/y": {"k": {"choice": {}, "el_per_ns": 1}}}}
    wisdom.write_text(json.dumps(other))
    with pytest.warns(tune.WisdomWarning, match="another CPU"):
        assert tune.choose("softmax", 8, 8) == tune.builtin("softmax", 8, 8)
    tune.tune("logsumexp", shapes=[(4, 20)], **TINY)
    data = json.loads(wisdom.read_text())
    assert "riscv64/x/y" in data["targets"] and len(data["targets"]) == 2


@pytest.mark.parametrize("content,match", [
    ("{not json", "ignoring wisdom"),
    ('{"version": 999, "targets": {}}', "version"),
    ('[1, 2]', "version"),
    ('{"version": 1, "targets": {"%s": {"softmax/n<=2^6/cache": {"choice": {"algorithm": "magic", "schedule": {}}}}}}',
     "unknown algorithm"),
    ('{"version": 1, "targets": {"%s": {"softmax/n<=2^6/cache": {"choice": {"algorithm": "online", "schedule": {"unroll": 0}}}}}}',
     "unroll"),
])
def test_corrupt_wisdom_is_ignored_with_a_warning(wisdom, content, match):
    wisdom.parent.mkdir(parents=True)
    if "%s" in content:
        content = content % tune.target_key(softgen.Target.parse("host"))
    wisdom.write_text(content)
    with pytest.warns(tune.WisdomWarning, match=match):
        assert tune.choose("softmax", 8, 64) == tune.builtin("softmax", 8, 64)
    x = np.float32([[1, 2, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tune.WisdomWarning)
        check("softmax", x, softgen.softmax(x))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def few_candidates(monkeypatch):
    """The tuner tries three candidates per band (for the tests of progress and of what is
    saved: they time no real choice; test_every_candidate_is_correct runs them all)."""
    every = tune.candidates
    monkeypatch.setattr(tune, "candidates", lambda *args, **kw: every(*args, **kw)[:3])


def test_progress_on_a_terminal_is_a_bar(wisdom, few_candidates):
    out = _Terminal()
    tune.tune("softmax", shapes=[(2, 16)], budget=0.001, stream=out)
    total = len(tune.candidates("softmax", 2, 16))
    assert f"0/{total}" in out.getvalue() and f"{total}/{total}" in out.getvalue()


def test_progress_elsewhere_is_one_line_per_band(wisdom, few_candidates):
    """A log or a pipe gets no redrawn frames ('\\r'): a line for each band tuned."""
    out = io.StringIO()
    results = tune.tune("softmax", shapes=[(2, 16), (2, 64)], budget=0.001, stream=out)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == len(results) == 2
    assert all(line.startswith(f"tuned {band}: {choice.describe()} (") for line, (band, (choice, _)) in
               zip(lines, results.items()))


def test_tune_rejects_bad_requests(wisdom):
    with pytest.raises(ValueError, match="unknown op"):
        tune.tune("softmin", shapes=[(1, 8)], **TINY)
    with pytest.raises(ValueError, match="rows, n"):
        tune.tune("softmax", shapes=[(8,)], **TINY)
    with pytest.raises(ValueError, match="n >= 1"):
        tune.tune("softmax", shapes=[(8, 0)], **TINY)
    with pytest.raises(ValueError, match="host"):
        tune.tune("softmax", shapes=[(1, 8)], target="aarch64", **TINY)
    assert not wisdom.exists()


def _every_candidate_schedule():
    """Every candidate for softmax; for the other ops, those of short rows (the ones that
    differ most: row groups, no block max scan).  Each is a kernel to compile."""
    seen = {}
    for op in softgen.OPS:
        shapes = ((64, 64), (64, 4096), (1, 1 << 26)) if op == "softmax" else ((64, 64),)
        for rows, n in shapes:
            for c in tune.candidates(op, rows, n):
                seen.setdefault((op, c), None)
    return list(seen)


@pytest.mark.parametrize("op,choice", _every_candidate_schedule(),
                         ids=lambda v: v.describe() if isinstance(v, tune.Choice) else v)
def test_every_candidate_is_correct(op, choice):
    """Whatever the tuner picks computes the right thing: random rows of many lengths in
    groups with a remainder, special rows mixed in."""
    kernel = softgen.compile(op, algorithm=choice.algorithm, schedule=choice.schedule)
    rng = np.random.default_rng(7)
    for n in (1, 15, 64, 129, 3000):
        x = (rng.standard_normal((37, n)) * 4).astype(np.float32)
        check(op, x, kernel(x))
        # wide spreads, rising rows: exponents far above the first ones (running pair sums)
        wide = np.concatenate([x * 8 + 1000, np.sort(x * 30, axis=1)]).astype(np.float32)
        check(op, wide, kernel(wide))
    for n in (3, 300):
        x = np.concatenate([np.stack(list(special_rows(n).values()))] * 2)
        y = kernel(x)
        for i in range(len(x)):
            check(op, x[i:i + 1], y[i:i + 1])


def test_cli_tune_writes_the_wisdom_file(tmp_path):
    path = tmp_path / "w.json"
    res = subprocess.run([sys.executable, "-m", "softgen.cli", "tune", "--op", "logsumexp", "--shape", "8x33",
                          "--budget", "0.001", "--wisdom", str(path), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "logsumexp/n<=2^6/cache" in res.stdout and f"wrote {path}" in res.stdout
    data = json.loads(path.read_text())
    assert "logsumexp/n<=2^6/cache" in data["targets"][tune.target_key(softgen.Target.parse("host"))]


# --- the schedule's JSON form, and "auto:ROWSxN" ---------------------------------------------

@pytest.mark.parametrize("schedule", [Schedule(), Schedule(unroll=3, block=96, pair_sum="merge"),
                                      Schedule(rows_per_group=16, interleave=4, pipeline=True, nontemporal=True,
                                               prefetch=512, fast_exp=False, online_block_max=False)])
def test_schedule_json_round_trip(schedule):
    assert Schedule.from_json(schedule.to_json()) == schedule
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
    assert set(schedule.to_dict()) == {f.name for f in dataclasses.fields(Schedule)}


def test_schedule_json_missing_knobs_take_defaults():
    assert Schedule.from_json('{"unroll": 2, "pipeline": true}') == Schedule(unroll=2, pipeline=True)
    assert Schedule.from_dict({}) == Schedule()


@pytest.mark.parametrize("text, match", [
    ('{"unrol": 2}', "unknown schedule knob.*'unrol'.*the knobs are unroll"),
    ('{"unroll": true}', "Schedule.unroll must be int, not True"),
    ('{"unroll": 2.0}', "Schedule.unroll must be int"),
    ('{"pipeline": 1}', "Schedule.pipeline must be bool"),
    ('{"pair_sum": 3}', "Schedule.pair_sum must be str"),
    ('{"pair_sum": "sideways"}', "pair_sum must be one of"),
    ('{"unroll": 2, "accumulators": 3}', "must be at most unroll"),
    ('{"unroll": 0}', "integer >= 1"),
    ("[4]", "an object of knobs, not list"),
    ("unroll=4", "a schedule in JSON"),
])
def test_schedule_json_errors(text, match):
    with pytest.raises(ValueError, match=match):
        Schedule.from_json(text)


def test_wisdom_holds_the_schedules_json_form(wisdom):
    """The file keeps every knob (Schedule.to_dict), the format files had before it."""
    odd = tune.Choice("online", Schedule(unroll=2, accumulators=1, rows_per_group=4))
    tune.save_wisdom(wisdom, softgen.Target.parse("host"), {tune.band("softmax", 4, 100): (odd, 1.0)})
    entry = json.loads(wisdom.read_text())["targets"][tune.target_key(softgen.Target.parse("host"))]
    stored = entry[tune.band("softmax", 4, 100)]["choice"]["schedule"]
    assert stored == dataclasses.asdict(odd.schedule) == odd.schedule.to_dict()
    assert tune.choose("softmax", 4, 100) == odd


@pytest.mark.parametrize("algorithm", ["auto", "two_pass", "online"])
@pytest.mark.parametrize("op, rows, n", [("softmax", 4096, 64), ("log_softmax", 5, 300), ("logsumexp", 1, 1 << 20)])
def test_auto_schedule_is_what_the_jit_runs(wisdom, op, rows, n, algorithm):
    """generate(schedule="auto:ROWSxN") and emit_c(...) get the kernel the JIT runs for that
    shape: choose() for algorithm "auto" (here partly from wisdom), else the built-in rule."""
    odd = tune.Choice("online", Schedule(unroll=3, block=96))
    tune.save_wisdom(wisdom, softgen.Target.parse("host"), {tune.band("log_softmax", 5, 300): (odd, 1.0)})
    expected = tune.choose(op, rows, n) if algorithm == "auto" else \
        tune.Choice(algorithm, tune.builtin_schedule(op, algorithm, rows, n))
    assert tune.resolve(op, algorithm, rows, n) == expected
    jit = api._kernel_for(op, algorithm, np.zeros((rows, n), np.float32), 1)
    assert (jit.algorithm, jit.schedule) == (expected.algorithm, expected.schedule)
    artifact = softgen.generate(op, algorithm=algorithm, target="host", schedule=f"auto:{rows}x{n}")
    assert (artifact.algorithm, artifact.schedule) == (expected.algorithm, expected.schedule)
    source = softgen.emit_c(op, algorithm=algorithm, schedule=f"auto:{rows}X{n}")  # x or X
    assert (source.algorithm, source.schedule) == (expected.algorithm, rendered_schedule(expected.schedule, ISAS['scalar'])[0])


@pytest.mark.parametrize("spec", ["auto:", "auto:64", "auto:0x64", "auto:64x-1", "auto:axb", "auto:4x4x4"])
def test_bad_auto_schedules(spec):
    with pytest.raises(ValueError, match="auto:ROWSxN"):
        tune.auto_shape(spec)
    with pytest.raises(ValueError, match="auto:ROWSxN"):
        softgen.generate("softmax", algorithm="online", target="host", schedule=spec)


def test_algorithm_auto_needs_an_auto_schedule():
    with pytest.raises(ValueError, match="give schedule='auto:ROWSxN'"):
        softgen.generate("softmax", algorithm="auto", target="host")
    with pytest.raises(ValueError, match="give schedule='auto:ROWSxN'"):
        softgen.emit_c("softmax", algorithm="auto", schedule=Schedule())


def test_choose_for_another_target_uses_its_wisdom(wisdom):
    """Wisdom tuned elsewhere (for aarch64) is what auto gives when generating for aarch64."""
    odd = tune.Choice("two_pass", Schedule(unroll=2))
    aarch64 = softgen.Target.parse("aarch64")
    tune.save_wisdom(wisdom, aarch64, {tune.band("softmax", 8, 500): (odd, 1.0)})
    assert tune.choose("softmax", 8, 500, target="aarch64") == odd
    assert softgen.generate("softmax", algorithm="auto", target=aarch64, schedule="auto:8x500").schedule == odd.schedule
    with pytest.warns(tune.WisdomWarning, match="another CPU"):  # not for this machine
        assert tune.choose("softmax", 8, 500) == tune.builtin("softmax", 8, 500)


# --- dtypes ---------------------------------------------------------------------------------

def _host():
    return softgen.Target.parse("host")


# (x's dtype, y's) whose y is narrower than what the kernel computes in: never reload
NARROW = [("float16", None), ("bfloat16", None), ("float32", "float16"), ("float32", "bfloat16"),
          ("float64", "float32"), ("float64", "float16"), ("bfloat16", "float16")]
WIDE = [("float32", None), ("float64", None), ("bfloat16", "float32"), ("float16", "float32"),
        ("float16", "float64"), ("float32", "float64")]


def test_bands_per_dtype(monkeypatch):
    """float32's bands keep their keys (wisdom written before dtypes is float32's); the other
    pairs end in their dtypes; residency counts each array's bytes."""
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    assert tune.band("softmax", 8, 100) == "softmax/n<=2^7/cache"
    assert tune.band("softmax", 8, 100, np.float32, "float32") == "softmax/n<=2^7/cache"
    assert tune.band("softmax", 8, 100, "float64") == "softmax/n<=2^7/cache/float64"
    assert tune.band("softmax", 8, 100, "float64", np.float64) == "softmax/n<=2^7/cache/float64"
    assert tune.band("softmax", 8, 100, "bfloat16", "float32") == "softmax/n<=2^7/cache/bfloat16->float32"
    assert tune.band("logsumexp", 8, 100, "float32", "float16") == "logsumexp/n<=2^7/cache/float32->float16"
    assert tune.in_cache("softmax", 1, 3 << 20) and not tune.in_cache("softmax", 1, 3 << 20, "float64")
    assert not tune.in_cache("softmax", 1, 6 << 20) and tune.in_cache("softmax", 1, 6 << 20, "bfloat16")
    assert tune.in_cache("softmax", 1, 5 << 20, "float16", "float32")          # 10 + 20 MB
    assert not tune.in_cache("softmax", 1, 6 << 20, "float16", "float32")      # 12 + 24 MB
    assert tune.band("softmax", 1, 3 << 20, "float64").endswith("memory/float64")
    with pytest.raises(TypeError, match="unsupported dtype"):
        tune.band("softmax", 1, 8, "int8")


@pytest.mark.parametrize("dtype,out_dtype", NARROW, ids=str)
def test_reload_is_never_chosen_for_narrower_outputs(wisdom, monkeypatch, dtype, out_dtype):
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    assert not tune.reload_allowed(dtype, out_dtype)
    for op in softgen.OPS:
        for rows, n in tune.DEFAULT_SHAPES + ((4, 1000), (1, 10), (3, 1)):
            assert tune.choose(op, rows, n, dtype=dtype, out_dtype=out_dtype).algorithm != "three_pass_reload"
            assert tune.resolve(op, "auto", rows, n, dtype=dtype, out_dtype=out_dtype).algorithm != "three_pass_reload"
            assert all(c.algorithm != "three_pass_reload" for c in tune.candidates(op, rows, n, dtype, out_dtype))
    # where float32 reloads, the rule takes recompute (also exp twice, no re-read of y)
    assert tune.choose("softmax", 4, 1000).algorithm == "three_pass_reload"
    assert tune.choose("softmax", 4, 1000, dtype=dtype, out_dtype=out_dtype).algorithm == "three_pass_recompute"


@pytest.mark.parametrize("dtype,out_dtype", WIDE, ids=str)
def test_reload_stays_where_the_output_is_as_wide(wisdom, monkeypatch, dtype, out_dtype):
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    assert tune.reload_allowed(dtype, out_dtype)
    assert tune.choose("softmax", 4, 1000, dtype=dtype, out_dtype=out_dtype).algorithm == "three_pass_reload"
    assert any(c.algorithm == "three_pass_reload" for c in tune.candidates("softmax", 4, 1000, dtype, out_dtype))


def test_rule_thresholds_scale_with_element_size(monkeypatch):
    """A short row is a few vectors of the compute dtype (float64: half as many elements);
    the group row is bytes of x in flight per row (float64: half, 16-bit: twice).  On a
    Zen 4 (AVX-512, 1 MB L2): 128 and 4096 float32."""
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    zen4 = "x86_64:znver4"
    assert tune.dtype_thresholds(target=zen4) == (128, 4096)
    assert tune.dtype_thresholds("float64", target=zen4) == (64, 2048)
    assert (tune.dtype_thresholds("float16", target=zen4)
            == tune.dtype_thresholds("bfloat16", "float32", target=zen4) == (128, 8192))
    assert tune.dtype_thresholds("float32", "float64", target=zen4) == (64, 4096)
    assert tune.dtype_thresholds("float64", "float16", target=zen4) == (64, 2048)
    # logsumexp: recompute for short rows, two-pass beyond
    assert tune.builtin("logsumexp", 4096, 100, target=zen4).algorithm == "three_pass_recompute"
    assert tune.builtin("logsumexp", 4096, 100, "float64", target=zen4).algorithm == "two_pass"
    assert tune.builtin("logsumexp", 4096, 64, "float64", target=zen4).algorithm == "three_pass_recompute"
    assert tune.builtin("logsumexp", 4096, 100, "bfloat16", target=zen4).algorithm == "three_pass_recompute"
    short = Schedule(rows_per_group=16, unroll=1, pipeline=True, online_block_max=False)
    assert tune.builtin_schedule("softmax", "online", 64, 100, target=zen4) == short
    # float64's degree-11 polynomial: 12 coefficients per row leave room for 2 sets
    assert (tune.builtin_schedule("softmax", "online", 64, 100, "float64", target=zen4)
            == Schedule(rows_per_group=16, pipeline=True, accumulators=2))
    assert tune.builtin_schedule("softmax", "online", 64, 64, "float64", target=zen4) == short
    assert tune.builtin_schedule("softmax", "online", 64, 3000, target=zen4).rows_per_group == 16
    assert tune.builtin_schedule("softmax", "online", 64, 3000, "float64", target=zen4).rows_per_group == 4
    assert tune.builtin_schedule("softmax", "online", 64, 6000, target=zen4).rows_per_group == 4
    assert tune.builtin_schedule("softmax", "online", 64, 6000, "bfloat16", "float32", target=zen4).rows_per_group == 16
    # the tuner's candidates are the host's: 32 float32 are a short row on any vector unit
    assert any(c.schedule.unroll == 1 for c in tune.candidates("softmax", 64, 32))
    assert not any(c.schedule.unroll == 1 for c in tune.candidates("softmax", 64, 100, "float64"))


def test_rule_follows_the_targets_registers_and_caches(monkeypatch):
    """32 zmm registers hold three pipelined stages of softmax with 4 accumulator sets, 16
    ymm registers with 2 (log_softmax's with 1); groups are a register's worth of rows,
    and the group row follows the L2 (Zen 3: 512 KB, Zen 4: 1 MB)."""
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    zen4, zen3, v3 = tune.Machine.of("x86_64:znver4"), tune.Machine.of("x86_64:znver3"), tune.Machine.of("x86-64-v3")
    assert (zen4.lanes, zen4.registers, zen4.native_ldexp, zen4.nan_record) == (16, 32, True, False)
    assert (zen3.lanes, zen3.registers, zen3.native_ldexp, zen3.nan_record) == (8, 16, False, True)
    assert tune.dtype_thresholds(target="x86_64:znver3") == (64, 4096)
    assert tune.dtype_thresholds(target="x86-64-v3") == (64, v3.caches.l2 // (4 * 8 * 4))
    # softmax reload per pass: (state vectors per accumulator set, row constants); AVX-512
    # keeps exp's scale in its 6 coefficients; AVX2 a max's NaN record in a vector where
    # no sum carries the NaN (logsumexp's, not softmax's: acc.max nan_caught)
    program = softgen.algorithms.build("softmax", "three_pass_reload")
    assert tune.sweep_vectors(program, zen4) == [(1, 0), (1, 7), (0, 1)]
    assert tune.sweep_vectors(program, zen3) == [(1, 0), (1, 2), (0, 1)]
    logsumexp = softgen.algorithms.build("logsumexp", "three_pass_recompute")
    assert tune.sweep_vectors(logsumexp, zen3) == [(2, 0), (2, 3)]
    # pipelined: 2 states x 2 sets + 3 row constants + 8 temporaries fit in 16 registers,
    # log_softmax's 3 x 1 + 5 + 8 too (each pass alone: 4, 2 and 4 sets)
    assert tune._sets_that_fit(tune.sweep_vectors(program, zen3), 4, zen3) == 2
    log_softmax = tune.sweep_vectors(softgen.algorithms.build("log_softmax", "three_pass_recompute"), zen3)
    assert tune._sets_that_fit(log_softmax, 4, zen3) == 1
    assert [tune._sets_that_fit([p], 4, zen3) for p in log_softmax] == [4, 2, 4]
    assert tune.builtin("softmax", 1024, 1024, target="x86_64:znver4") == tune.Choice(
        "three_pass_reload", Schedule(rows_per_group=16, pipeline=True))
    assert tune.builtin("softmax", 1024, 1024, target="x86_64:znver3") == tune.Choice(
        "three_pass_reload", Schedule(rows_per_group=8, accumulators=2, pipeline=True))
    # log_softmax's two-pass sums (4 vectors of state per set) fit twice in 16 registers
    assert tune.builtin_schedule("log_softmax", "two_pass", 16, 1 << 22, target="x86_64:znver3").accumulators == 2
    assert tune.builtin_schedule("log_softmax", "two_pass", 16, 1 << 22, target="x86_64:znver4").accumulators == 0


def test_wisdom_is_per_dtype(wisdom, monkeypatch):
    """Wisdom for one dtype pair is that pair's: a float64 entry leaves float32's rule alone
    and the other way round, and the JIT runs it for float64 arrays."""
    odd64 = tune.Choice("online", Schedule(unroll=3, block=96))
    odd32 = tune.Choice("two_pass", Schedule(unroll=2))
    tune.save_wisdom(wisdom, _host(), {tune.band("log_softmax", 5, 300, "float64"): (odd64, 1.0)})
    assert tune.choose("log_softmax", 5, 300, dtype="float64") == odd64
    assert tune.resolve("log_softmax", "auto", 5, 300, dtype=np.float64) == odd64
    assert tune.choose("log_softmax", 5, 300) == tune.builtin("log_softmax", 5, 300)
    assert tune.choose("log_softmax", 5, 300, dtype="float32", out_dtype="float64") == \
        tune.builtin("log_softmax", 5, 300, "float32", "float64")
    tune.save_wisdom(wisdom, _host(), {tune.band("log_softmax", 5, 300): (odd32, 1.0)})
    assert tune.choose("log_softmax", 5, 300) == odd32
    assert tune.choose("log_softmax", 5, 300, dtype="float64") == odd64
    assert tune.choose("log_softmax", 5, 300, dtype="float16") == tune.builtin("log_softmax", 5, 300, "float16")
    # the JIT's lookup asks for the array's dtypes
    monkeypatch.setattr(api, "_kernels", {})
    monkeypatch.setattr(api, "_compile_variant", lambda op, algorithm, dtype, out_dtype, target, schedule, variant:
                        (algorithm, schedule))
    assert api._kernel_for("log_softmax", "auto", np.zeros((5, 300), np.float64), 1) == ("online", odd64.schedule)
    assert api._kernel_for("log_softmax", "auto", np.zeros((5, 300), np.float32), 1) == ("two_pass", odd32.schedule)


def test_wisdom_without_dtypes_is_float32s(wisdom):
    """A file as softgen wrote it before dtypes (bands without a dtype) still reads: float32's."""
    wisdom.parent.mkdir(parents=True)
    choice = {"algorithm": "online", "schedule": {"unroll": 3, "block": 96}}
    wisdom.write_text(json.dumps({"version": 1, "targets": {tune.target_key(_host()): {
        "log_softmax/n<=2^9/cache": {"choice": choice, "el_per_ns": 2.0}}}}))
    old = tune.Choice.from_json(choice)
    assert tune.choose("log_softmax", 5, 300) == tune.choose("log_softmax", 5, 300, dtype="float32", out_dtype="float32") == old
    for dtype, out_dtype in (("float64", None), ("bfloat16", None), ("float16", "float32"), ("float32", "float64")):
        assert tune.choose("log_softmax", 5, 300, dtype=dtype, out_dtype=out_dtype) == \
            tune.builtin("log_softmax", 5, 300, dtype, out_dtype)


def test_wisdom_never_reloads_into_narrower_outputs(wisdom, monkeypatch):
    """A hand-made (or stale) entry naming reload for a 16-bit output is not followed."""
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    reload = tune.Choice("three_pass_reload", Schedule(unroll=2))
    tune.save_wisdom(wisdom, _host(), {tune.band("softmax", 4, 1000, "float16"): (reload, 1.0),
                                       tune.band("softmax", 4, 1000, "bfloat16", "float32"): (reload, 1.0)})
    assert tune.choose("softmax", 4, 1000, dtype="float16") == tune.builtin("softmax", 4, 1000, "float16")
    assert tune.choose("softmax", 4, 1000, dtype="float16").algorithm == "three_pass_recompute"
    assert tune.choose("softmax", 4, 1000, dtype="bfloat16", out_dtype="float32") == reload


def test_auto_schedules_for_generate_follow_the_dtypes(wisdom, monkeypatch):
    """schedule="auto:ROWSxN" resolves for the dtypes asked for (what the JIT runs for them)."""
    monkeypatch.setattr(tune, "llc_bytes", lambda: 32 << 20)
    f32 = tune.resolve_request("softmax", "auto", "auto:64x100")
    f64 = tune.resolve_request("softmax", "auto", "auto:64x100", "host", "float64")
    f16 = tune.resolve_request("softmax", "auto", "auto:64x100", "host", "float16")
    assert f32 == ("three_pass_reload", tune.builtin_schedule("softmax", "three_pass_reload", 64, 100))
    assert f64 == ("three_pass_reload", Schedule(rows_per_group=16, pipeline=True)) != f32
    assert f16[0] == "three_pass_recompute"
    assert tune.resolve_request("logsumexp", "two_pass", "auto:4096x100", "host", "float64")[1] == \
        tune.builtin_schedule("logsumexp", "two_pass", 4096, 100, "float64")


# one pair (the tuner times real kernels; the band keys of the others are tested above)
@pytest.mark.parametrize("dtype,out_dtype", [("float16", "float32")], ids=str)
def test_tune_per_dtype(wisdom, few_candidates, dtype, out_dtype):
    """tune(dtype=...) times that pair's kernels and saves them under its bands only."""
    results = enabled(tune.tune, "softmax", shapes=[(8, 40)], dtype=dtype, out_dtype=out_dtype, **TINY)
    key = tune.band("softmax", 8, 40, dtype, out_dtype)
    assert set(results) == {key} and key != tune.band("softmax", 8, 40)
    choice, speed = results[key]
    assert speed > 0 and choice in tune.candidates("softmax", 8, 40, dtype, out_dtype)
    assert tune.choose("softmax", 8, 40, dtype=dtype, out_dtype=out_dtype) == choice
    entries = json.loads(wisdom.read_text())["targets"][tune.target_key(_host())]
    assert set(entries) == {key}
    assert tune.choose("softmax", 8, 40) == tune.builtin("softmax", 8, 40)


def test_cli_tune_takes_dtypes(tmp_path):
    path = tmp_path / "w.json"
    res = subprocess.run([sys.executable, "-m", "softgen.cli", "tune", "--op", "logsumexp", "--shape", "8x33",
                          "--dtype", "bfloat16", "--out-dtype", "float32", "--budget", "0.001",
                          "--wisdom", str(path), "--quiet"], capture_output=True, text=True, timeout=300)
    if res.returncode == 2 and "not enabled" in res.stderr:
        pytest.skip(f"kernels for these dtypes are not enabled yet: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    band = "logsumexp/n<=2^6/cache/bfloat16->float32"
    assert band in res.stdout
    assert set(json.loads(path.read_text())["targets"][tune.target_key(_host())]) == {band}
