"""The measurements behind `python -m bench`. Every timed run is preceded by an untimed warm-up."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from pathlib import Path

import requests

from tests.harness import EXAMPLES, start_server

from . import realtime

CLONE_FRAMES = 25  # one second: (f) times the reference encoding, not generation

TEXT = "The sun rises in the east and sets in the west. This simple fact has been observed for thousands of years."
SAMPLE_RATE = 24000
FRAME_RATE = 25


def build_checkpoint(out: Path, size: str) -> Path:
    from model_pool import tiny

    started = time.perf_counter()
    tiny.build(out, size=size)
    print(f"built a random {size} checkpoint in {time.perf_counter() - started:.1f}s", flush=True)
    return out


def _row(key: str, name: str, seconds: list[float], frames: int, **extra) -> dict:
    median = statistics.median(seconds)
    row = {"id": key, "name": name, "median_s": median, "runs_s": seconds, "frames": frames,
           "frames_per_s": frames / median if median and frames else None, **extra}
    rate = f"{row['frames_per_s']:.1f} frames/s" if row["frames_per_s"] else f"{extra.get('ms_per_step', 0):.2f} ms/step"
    print(f"  ({key}) {name}: {median:.3f}s, {rate}", flush=True)
    return row


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def in_process(checkpoint: Path, device: str, frames: int, repeats: int, compiled: bool, slots: int = 1
               ) -> list[dict]:
    """(a), (b), (b') and (g), interleaved; (b') is the compiled step with `slots` batch slots (the server's count
    on a GPU, where the compiled graph is then shared with the server through the inductor cache)."""
    import torch

    from model_pool.defaults import DEFAULT_MAX_CONTEXT_TOKENS
    from model_pool.engine import HiggsEngine
    from model_pool.engine.loader import load
    from model_pool.engine.voice_cache import VoiceCache
    from model_pool.pool import ModelPool, split_cpu_threads
    from model_pool.pool_loader import PoolLoader
    from model_pool.prompt.library import SceneLibrary, VoiceLibrary
    from model_pool.request import GenerationRequest, SamplingParams
    from model_pool.service import TTSService

    if device == "cpu":  # (a), (b) and the server run with the same torch threads
        torch.set_num_threads(split_cpu_threads(1))
    loaded = load(str(checkpoint / "model"), str(checkpoint / "audio_tokenizer"), torch.device(device))
    steps = frames + 8
    engine = HiggsEngine(loaded, VoiceCache(), name="bench")
    voices, scenes = VoiceLibrary(EXAMPLES / "voice_prompts"), SceneLibrary(EXAMPLES / "scene_prompts")
    service = TTSService(PoolLoader.of(ModelPool([engine])), voices, scenes, max_new_tokens=steps)
    # Greedy without RAS on both sides (the library is asked for no RAS below), so both do the same work.
    params = SamplingParams(temperature=0, ras_win_len=0, max_new_tokens=steps, min_new_tokens=steps)
    job = service.prepare(GenerationRequest(text=TEXT, scene_prompt="", sampling=params))
    prompt = engine.encode_prompt(job.plan.conversation(0, []))
    ids = prompt.input_ids.unsqueeze(0).to(loaded.device)
    print(f"prompt: {ids.shape[1]} tokens; {frames} frames per run", flush=True)

    def library():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=steps, ras_win_len=None)
        audio = loaded.processor.decode(out)
        assert audio.shape[-1] == frames * 960, audio.shape

    def ours():
        audio = service.generate(job)
        assert audio.shape[0] == frames * 960, audio.shape

    contenders = [("a", "library: transformers generate + processor decode", library, 1),
                  ("b", "engine in-process (service.generate)", ours, 1)]
    if compiled:
        context = ids.shape[1] + steps if slots == 1 else DEFAULT_MAX_CONTEXT_TOKENS
        fast = HiggsEngine(loaded, VoiceCache(), name="bench-compiled", compile=True, max_batch_size=slots,
                           context_tokens=context)
        fast_service = TTSService(PoolLoader.of(ModelPool([fast])), voices, scenes, max_new_tokens=steps)
        contenders.append(("b_compiled", "engine in-process, compiled decode step",
                           lambda: fast_service.generate(job), 1))
    contenders += bare_model(loaded, prompt.input_ids, frames)
    contenders += live_lengths(loaded)
    # Interleaved rounds (a, b, ..., a, b, ...): this machine's speed drifts by 10-20% over a minute, which would
    # otherwise land on whichever contender ran during the slow stretch.
    for _, _, fn, _ in contenders:
        fn()  # warm-up
    times: dict[str, list[float]] = {key: [] for key, _, _, _ in contenders}
    for _ in range(repeats):
        for key, _, fn, _ in contenders:
            started = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - started)
    return [_row(key, name, times[key], frames * batch,
                 **({"ms_per_step": 1000 * statistics.median(times[key]) / LIVE_STEPS} if not batch else {}))
            for key, name, _, batch in contenders]


def bare_model(loaded, input_ids, frames: int, rows: int = 8) -> list[tuple]:
    """(g) The ceiling for batching on this hardware: the model alone (no engine, sampling or decoding), N
    prefills then the decode forwards of a batch of N rows, against the same with one row; and two such loops of
    2 rows in two threads, as two instances of one server process run."""
    import torch
    from transformers import DynamicCache

    model, config = loaded.model, loaded.model.config
    steps = frames + 8

    def loop(batch: int):
        ids = input_ids.to(loaded.device).unsqueeze(0)
        cache = DynamicCache(config=config)
        with torch.inference_mode():
            for _ in range(batch - 1):  # every request is prefilled, as in the engine
                model(input_ids=ids, past_key_values=DynamicCache(config=config), use_cache=True, logits_to_keep=1)
            model(input_ids=ids.repeat(batch, 1), past_key_values=cache, use_cache=True, logits_to_keep=1)
            mask = torch.ones((batch, ids.shape[1]), dtype=torch.long, device=loaded.device)
            codes = torch.zeros((batch, 1, config.num_codebooks), dtype=torch.long, device=loaded.device)
            for i in range(steps):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = torch.full((batch, 1), ids.shape[1] + i, device=loaded.device)
                model(audio_input_ids=codes, attention_mask=mask, position_ids=positions, past_key_values=cache,
                      use_cache=True)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()

    def two_instances():
        # The server's two-instance layout: two threads of one process, each with its own batch of 2 rows.
        threads = [threading.Thread(target=loop, args=(2,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return [("g_1", "bare model loop, 1 row (prefill + forwards)", lambda: loop(1), 1),
            (f"g_{rows}", f"bare model loop, {rows} rows", lambda: loop(rows), rows),
            ("g_2x2", "bare model loop, 2 threads x 2 rows (two instances)", two_instances, 4)]


LIVE_STEPS = 200


def live_lengths(loaded, steps: int = LIVE_STEPS, short: int = 100, slots: int = 8) -> list[tuple]:
    """(h) What a decode step costs against what the rows hold: one short row in a small cache, the same row in the
    largest cache (its window stays small), and one row that fills the largest cache. Each run is `steps` steps of
    the eager step function, one row in a cache of `slots` slots (the server's default)."""
    import torch

    from model_pool.defaults import DEFAULT_MAX_CONTEXT_TOKENS
    from model_pool.engine.slot_cache import SlotCache, decode_step

    model, device = loaded.model, loaded.device
    large = min(DEFAULT_MAX_CONTEXT_TOKENS, model.config.max_position_embeddings)

    caches = {context: SlotCache(model, slots, context, device, model.dtype) for context in (512, large)}
    codes = torch.zeros((slots, model.config.num_codebooks), dtype=torch.long, device=device)

    def loop(context: int, length: int):  # the caches exist beforehand: only the steps are timed
        cache = caches[context]
        with torch.inference_mode():
            for _ in range(steps):
                cache.lengths.zero_()
                cache.lengths[0] = length
                decode_step(model, cache, codes, cache.window(length + 1), 1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return [("h_small", f"decode step: 1 row of {short} tokens, {512}-token cache", lambda: loop(512, short), 0),
            ("h_large", f"decode step: 1 row of {short} tokens, {large}-token cache", lambda: loop(large, short), 0),
            ("h_full", f"decode step: 1 row of {large - 1} tokens, {large}-token cache",
             lambda: loop(large, large - 1), 0)]


def _body(frames: int, **extra) -> dict:
    # Greedy without RAS, as (a) and (b): a RAS redraw can pick the stream-end code, and every run must make
    # exactly `frames` frames (the random audio head never picks it otherwise).
    # The runaway guard off: the random model's noise runs to max_new_tokens by design, past a short text's budget.
    return {"text": TEXT, "scene_prompt": "", "temperature": 0, "ras_win_len": 0, "max_new_tokens": frames + 8,
            "runaway_guard": False, **extra}


def _post_generate(url: str, frames: int, **extra) -> float:
    r = requests.post(f"{url}/generate", json=_body(frames, **extra), timeout=3600)
    r.raise_for_status()
    duration = r.json()["duration"]
    assert abs(duration - frames / FRAME_RATE) < 1e-6, f"{duration}s of audio, not {frames} frames"
    return duration


def _stream(url: str, frames: int) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    done = None
    with requests.post(f"{url}/generate-stream", json=_body(frames), stream=True, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: audio") and first is None:
                first = time.perf_counter() - started
            if line.startswith("event: error"):
                raise RuntimeError("stream failed")
            if line.startswith("data:") and '"type": "done"' in line:
                done = json.loads(line[5:])
    assert done and abs(done["duration"] - frames / FRAME_RATE) < 1e-6, f"stream ended with {done}"
    return first, time.perf_counter() - started


def _concurrent(url: str, clients: int, frames: int) -> tuple[float, float]:
    """Run `clients` requests at once; return (wall seconds, audio seconds produced)."""
    durations, barrier = [0.0] * clients, threading.Barrier(clients + 1)

    def work(i):
        barrier.wait()
        durations[i] = _post_generate(url, frames)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, sum(durations)


def _load_rows(url: str, label: str, levels: list[int], frames: int, repeats: int) -> list[dict]:
    rows = []
    for clients in levels:
        _concurrent(url, clients, frames)  # warm-up
        runs = [_concurrent(url, clients, frames) for _ in range(repeats)]
        wall = statistics.median(r[0] for r in runs)
        audio = statistics.median(r[1] for r in runs)
        row = {"id": f"e_{label}_{clients}", "name": f"{clients} concurrent clients, {label}", "clients": clients,
               "median_s": wall, "runs_s": [r[0] for r in runs], "audio_s_per_s": audio / wall,
               "frames_per_s": audio * FRAME_RATE / wall, "frames": int(audio * FRAME_RATE)}
        print(f"  (e) {row['name']}: {row['frames_per_s']:.1f} frames/s aggregate, "
              f"{row['audio_s_per_s']:.2f} audio s/s", flush=True)
        rows.append(row)
    return rows


def _clone_rows(url: str, voices: Path, repeats: int) -> list[dict]:
    first, second = [], []
    for i in range(repeats + 1):
        name = f"bench_voice_{i}"
        shutil.copy(EXAMPLES / "voice_prompts" / "belinda.wav", voices / f"{name}.wav")
        shutil.copy(EXAMPLES / "voice_prompts" / "belinda.txt", voices / f"{name}.txt")
        times = []
        for _ in range(2):
            started = time.perf_counter()
            _post_generate(url, CLONE_FRAMES, ref_audio=name)
            times.append(time.perf_counter() - started)
        if i:  # the first voice warms up the code paths
            first.append(times[0])
            second.append(times[1])
    rows = [_row("f_uncached", "named-voice clone, first request (encodes the reference)", first, CLONE_FRAMES),
            _row("f_cached", "named-voice clone, second request (cached codes)", second, CLONE_FRAMES)]
    return rows


SERVERS = ("on", "off", "two")  # batching on; batching off; two instances per device (eager)


def through_server(checkpoint: Path, work: Path, device: str, frames: int, load_frames: int, levels: list[int],
                   repeats: int, servers: tuple[str, ...] = SERVERS) -> list[dict]:
    voices = work / "voices"
    shutil.copytree(EXAMPLES / "voice_prompts", voices, dirs_exist_ok=True)
    longest = max(frames, load_frames, CLONE_FRAMES)
    common = ("--max-new-tokens", str(longest + 8), "--max-queue", "256", "--threads", "64",
              "--voice-prompts-dir", str(voices))
    rows: list[dict] = []
    batch = str(max(8, *levels))  # every client of the largest level in one batch (16 on a GPU run)
    configs = {"on": ("batching on", ("--max-batch-size", batch)),
               "off": ("batching off", ("--max-batch-size", "1")),
               "two": ("two instances", ("--max-batch-size", batch, "--instances-per-device", "2", "--compile",
                                         "off"))}
    for label, extra in (configs[name] for name in servers):
        log_dir = work / label.replace(" ", "_")
        log_dir.mkdir()
        server = start_server(checkpoint, log_dir, *common, *extra, device=device, timeout=1800)
        try:
            url = server.url
            print(f"server ({label}) on {url}", flush=True)
            if label == "batching on":
                rows.append(_row("c", "/generate through gunicorn",
                                 _timed(lambda url=url: _post_generate(url, frames), repeats), frames))
                _stream(url, frames)  # warm-up
                streams = [_stream(url, frames) for _ in range(repeats)]
                total = [s[1] for s in streams]
                row = _row("d", "/generate-stream total", total, frames)
                row["first_audio_s"] = statistics.median(s[0] for s in streams)
                print(f"  (d) time to first audio: {row['first_audio_s']:.3f}s", flush=True)
                rows.append(row)
                rows += _load_rows(url, "batching on", levels, load_frames, repeats)
                rows += _clone_rows(url, voices, repeats)
                rows += realtime.rows(url, REALTIME_FRAMES, repeats)
            elif label == "batching off":
                rows += _load_rows(url, "batching off", levels, load_frames, repeats)
            else:
                rows += _load_rows(url, "two instances", [c for c in levels if c in (1, 4)], load_frames,
                                   repeats)
        finally:
            server.stop()
    return rows


REALTIME_FRAMES = 50  # audio frames per realtime sentence (2 s)


def ratios(rows: list[dict]) -> dict:
    by = {r["id"]: r for r in rows}

    def ratio(a, b, field="median_s"):
        if a in by and b in by and by[b][field]:
            return by[a][field] / by[b][field]
        return None

    out = {
        "engine_vs_library (b/a, target <= 1.0)": ratio("b", "a"),
        "http_vs_engine (c/b, target <= 1.05)": ratio("c", "b"),
        "stream_total_vs_generate (d/c, target <= 1.15)": ratio("d", "c"),
        "first_audio_vs_stream_total (target <= 0.15)":
            by["d"]["first_audio_s"] / by["d"]["median_s"] if "d" in by else None,
        "8_clients_vs_1_batching_on (target >= 4)": ratio("e_batching on_8", "e_batching on_1", "frames_per_s"),
        "8_clients_vs_1_batching_off": ratio("e_batching off_8", "e_batching off_1", "frames_per_s"),
        "bare_model_8_rows_vs_1 (g: the hardware's ceiling for e)": ratio("g_8", "g_1", "frames_per_s"),
        "4_clients_two_instances_vs_1 (target >= 3)": ratio("e_two instances_4", "e_batching on_1",
                                                           "frames_per_s"),
        "bare_model_two_instances_2_rows_vs_1 (g: the ceiling for the line above)": ratio("g_2x2", "g_1",
                                                                                         "frames_per_s"),
        "cached_clone_vs_uncached": ratio("f_cached", "f_uncached"),
        "realtime_first_audio_vs_stream_alone (i, target <= 1.1)": ratio("i_first", "i_alone"),
        "host_ops_per_step_32_rows_vs_1 (j, target <= 1.5)": ratio("j_32", "j_1", "ops_per_step"),
    }
    if "b_compiled" in by:
        out["compiled_vs_eager (b'/b)"] = ratio("b_compiled", "b")
    out["step_short_row_large_cache_vs_small_cache (h, target ~1)"] = ratio("h_large", "h_small")
    out["step_full_row_vs_short_row (h: what a full context costs)"] = ratio("h_full", "h_large")
    return out

