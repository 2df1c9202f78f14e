"""The engine's host work per decode step does not grow with the rows (bench/ops.py counts it with torch.profiler
over every thread): a row adds no per-step op beyond its share of a noise block, and nothing syncs."""

from __future__ import annotations

from bench.ops import count


def test_ops_per_step_do_not_grow_with_the_rows_and_nothing_syncs(compiled_engine):
    slots = compiled_engine.capacity
    one, full = count(compiled_engine, 1, 30), count(compiled_engine, slots, 30)
    assert one["decode_steps"] >= 30 and full["decode_steps"] >= 30
    assert full["ops_per_step"] <= 1.5 * one["ops_per_step"], (one, full)  # the bound (32 slots in bench)
    # and far below it: one op per row per step (a per-row read of the report, say) would add 1 per extra row
    assert full["ops_per_step"] - one["ops_per_step"] <= 0.5 * (slots - 1), (one, full)
    assert one["syncing_ops"] == {} and full["syncing_ops"] == {}, full["syncing_ops"]
