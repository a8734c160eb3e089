"""The quality table of collected datasets, as docs/families-and-datasets.md prints them, from the datasets themselves.

Per family: the mean return of the saved episodes at every kept checkpoint (all tasks and test tasks, from the
manifest), the transitions per task, the share of saved episodes that end early (terminated before the horizon,
from the task files), the collection's wall time and the content hash of the task arrays (the fingerprint a run
records; a rebuild with the same command gives the same hash).

    python tools/dataset_table.py cheetah-vel hopper-rand-params      # reads data/<env-id>/
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
import omrl_envs  # noqa: E402


def describe(data_dir: Path, env_id: str) -> str:
    dataset_dir = data_dir / env_id
    try:
        manifest = omrl_envs.read_manifest(dataset_dir, env_id)
    except omrl_envs.DatasetError as error:
        raise SystemExit(f"error: {error}") from None
    if not manifest.get("complete"):
        raise SystemExit(f"error: {dataset_dir} is not complete: run python collect_sac.py --env-id {env_id}")
    hasher, episodes, early = omrl_envs.DatasetHasher(), 0, 0
    for task in range(omrl_envs.NUM_TASKS):
        data = omrl_envs.read_task_data(dataset_dir, env_id, task)
        hasher.update(data)
        ends = np.flatnonzero((data["terminations"] + data["truncations"]) > 0)
        episodes += len(ends)
        early += int((data["terminations"][ends] > 0).sum())  # terminated (fell), not cut at the horizon
    fingerprint = hasher.fingerprint(manifest)
    counts = fingerprint["transitions_per_task"]
    checkpoints = [f"{c // 1000}k" if c % 1000 == 0 else str(c) for c in manifest["checkpoints"]]
    means = manifest["checkpoint_returns_mean"]
    lines = [
        f"{env_id}: {min(counts):,}-{max(counts):,} transitions per task, {early / episodes:.0%} of {episodes:,} saved "
        f"episodes end early, collection {manifest.get('collection_wall_time_s', 0) / 60:.1f} min, content hash "
        f"`{fingerprint['content_hash'][:12]}...`",
        "",
        "| checkpoint | " + " | ".join(checkpoints) + " |",
        "|---|" + "---|" * len(checkpoints),
        "| all tasks | " + " | ".join(f"{r:.1f}" for r in means["all_tasks"]) + " |",
        "| test tasks | " + " | ".join(f"{r:.1f}" for r in means["test_tasks"]) + " |",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_ids", nargs="+", choices=omrl_envs.ENV_IDS)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    print("\n\n".join(describe(Path(args.data_dir), e) for e in args.env_ids))


if __name__ == "__main__":
    main()
