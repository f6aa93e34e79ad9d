"""Several replicas behind the SDK: calls spread over them with gRPC's round_robin, and a run
whose replica is SIGKILLed mid-run is resubmitted to another and still returns its result."""

from __future__ import annotations

import threading

from serverproc import ServerProcess, start_server

import featviz

# The run's replica must be killed while it runs: long enough at 64 px on a busy CPU.
LONG_RUN = {"size": 64, "steps": 60, "preview_every": 1, "seed": 5}


REPLICA_ARGS = ("--max-concurrent-runs", "2", "--metrics-port", "0")


def _runs_started(server: ServerProcess) -> float:
    return server.metric("featviz_runs_started_total")


def test_round_robin_spreads_runs_over_both_replicas(
    server: ServerProcess, second_server: ServerProcess
) -> None:
    before = [_runs_started(s) for s in (server, second_server)]
    with featviz.Client(f"{server.target},{second_server.target}") as client:
        client.describe_model()  # connects to both replicas
        for channel in range(6):
            assert client.maximize("block1_conv2", channel, size=32, steps=2).activations[0] > 0
    served = [_runs_started(s) - b for s, b in zip((server, second_server), before, strict=True)]
    assert sum(served) == 6
    assert min(served) >= 2, f"runs per replica: {served}"


def test_a_run_whose_replica_dies_is_resubmitted_and_completes() -> None:
    """Two identical runs on two fresh replicas; once both are under way, a replica serving at
    least one of them (by its active-run count) is SIGKILLed. Each run it served comes back
    UNAVAILABLE after its first updates and the SDK resubmits it, once, to the survivor: same
    seed, so the very same image."""
    running = [threading.Event(), threading.Event()]
    updates: list[list[featviz.Update]] = [[], []]
    outcomes: list[featviz.Result | BaseException | None] = [None, None]

    def run(client: featviz.Client, slot: int) -> None:
        def on_progress(update: featviz.Update) -> None:
            updates[slot].append(update)
            running[slot].set()

        try:
            outcomes[slot] = client.maximize(
                "block1_conv2", 14, on_progress=on_progress, **LONG_RUN
            )
        except BaseException as error:  # reported by the assertions below
            outcomes[slot] = error
            running[slot].set()

    with (
        start_server(*REPLICA_ARGS, wait=False) as first,
        start_server(*REPLICA_ARGS, wait=False) as second,  # both load their weights at once
        featviz.Client([first.target, second.target]) as client,
    ):
        first.wait_serving()
        second.wait_serving()
        client.describe_model()  # connects to both, so that the runs likely go one to each
        threads = [threading.Thread(target=run, args=(client, slot)) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        assert all(event.wait(60) for event in running), "the runs did not start"
        victim = max((first, second), key=lambda s: s.metric("featviz_active_runs"))
        victim.process.kill()
        for thread in threads:
            thread.join(timeout=120)

    assert all(isinstance(outcome, featviz.Result) for outcome in outcomes), outcomes
    retries = [[u for u in slot if isinstance(u, featviz.Retrying)] for slot in updates]
    assert all(isinstance(retry.error, featviz.Unavailable) for slot in retries for retry in slot)
    restarts = [sum(retry.restarted for retry in slot) for slot in retries]
    assert max(restarts) == 1  # the victim's run (or both, if it had both) resubmitted once
    first_result, second_result = outcomes
    assert isinstance(first_result, featviz.Result) and isinstance(second_result, featviz.Result)
    assert first_result.images[0].png == second_result.images[0].png  # same seed, same image
    assert first_result.activations[0] > 0
