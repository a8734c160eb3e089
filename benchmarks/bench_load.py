"""Peak memory of loading an offline dataset (the shared data block's load_offline_data) against the dataset's size.

Writes a synthetic dataset shaped like one family's (default Humanoid-Dir: obs 348, act 17, 40 tasks) of about
--size-gb to a temporary directory (deleted afterwards), then loads it in a fresh subprocess per loader: the loader
of select.py ("new": task by task into one preallocated array) and a verbatim copy of the loader before it ("old":
every task's arrays, then concatenations). Peak = the child's ru_maxrss after loading minus its RSS just before (the
imports done); size = the float32 arrays of the task files. Both loaders must give the same rows (SHA-256) and the
same dataset fingerprint; the script stops with an error if they do not.

    python benchmarks/bench_load.py                                  # 2 GB, both loaders, states normalised
    python benchmarks/bench_load.py --size-gb 0.2 --loaders new --no-normalize
"""

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: the standard library's `select` stays first
import omrl_envs  # noqa: E402


def dataset_bytes(env_id: str, transitions: int) -> int:
    """The float32 arrays of the task files: observations, actions, rewards, next observations and the two flags."""
    family = omrl_envs.get_family(env_id)
    return transitions * (2 * family.obs_dim + family.act_dim + 4) * 4


def write_synthetic_dataset(data_dir: Path, env_id: str, transitions_per_task: int, seed: int = 0) -> Path:
    """Random transitions in the dataset format (loading does not depend on the values): states with per-dimension
    scales from 1e-2 to 1e2 and offsets (so that normalising them matters), terminations now and then, episodes of
    at most the horizon."""
    family = omrl_envs.get_family(env_id)
    rng = np.random.default_rng(seed)
    scale = (10.0 ** rng.uniform(-2, 2, family.obs_dim)).astype(np.float32)
    offset = rng.normal(0, 3, family.obs_dim).astype(np.float32)
    dataset_dir = Path(data_dir) / env_id
    n = transitions_per_task
    for task in range(omrl_envs.NUM_TASKS):
        step_in_episode = np.arange(n) % family.horizon
        terminations = (rng.uniform(size=n) < 0.002).astype(np.float32)
        truncations = ((step_in_episode == family.horizon - 1) & (terminations == 0)).astype(np.float32)
        data = {
            "observations": rng.standard_normal((n, family.obs_dim), dtype=np.float32) * scale + offset,
            "actions": rng.uniform(-1, 1, (n, family.act_dim)).astype(np.float32),
            "rewards": rng.standard_normal(n, dtype=np.float32),
            "next_observations": rng.standard_normal((n, family.obs_dim), dtype=np.float32) * scale + offset,
            "terminations": terminations,
            "truncations": truncations,
            "checkpoint": (np.arange(n) // (10 * family.horizon)).astype(np.int64),
            "episode": (np.arange(n) // family.horizon).astype(np.int64),
        }
        omrl_envs.write_task_data(dataset_dir, env_id, task, data)
    omrl_envs.write_manifest(dataset_dir, omrl_envs.make_manifest(env_id, complete=True, synthetic=True))
    return dataset_dir


def old_load_offline_data(sel, env_id, data_dir, normalize_states, device, obs_stats=None):
    """The shared data block's earlier loader (verbatim but for `sel.`): every task's arrays, then copies."""
    import torch

    family = omrl_envs.get_family(env_id)
    dataset_dir = sel.ensure_dataset(env_id, data_dir)
    try:
        manifest, tasks = omrl_envs.load_dataset(dataset_dir, env_id)
    except omrl_envs.DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    if manifest.get("complete") is False:
        raise SystemExit(
            f"error: {dataset_dir / omrl_envs.MANIFEST}: dataset is incomplete (collection was interrupted); "
            f"rebuild with: python collect_sac.py --env-id {env_id} --data-dir {data_dir}"
        )
    obs_mean, obs_std = np.zeros(family.obs_dim), np.ones(family.obs_dim)
    if obs_stats is not None:
        obs_mean, obs_std = obs_stats
    elif normalize_states:
        train_obs = np.concatenate([tasks[t]["observations"] for t in omrl_envs.TRAIN_TASKS]).astype(np.float64)
        obs_mean, obs_std = train_obs.mean(0), train_obs.std(0) + 1e-3
    rows = []
    for t in range(omrl_envs.NUM_TASKS):
        d = tasks[t]
        rows.append(
            np.concatenate(
                [
                    (d["observations"] - obs_mean) / obs_std,
                    d["actions"],
                    d["rewards"][:, None],
                    (d["next_observations"] - obs_mean) / obs_std,
                    d["terminations"][:, None],  # truncations are time limits, not terminal states: bootstrap
                ],
                axis=1,
            ).astype(np.float32)
        )
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    context_dim = family.obs_dim + family.act_dim + 1 + (family.obs_dim if family.next_obs_in_context else 0)
    return sel.OfflineData(
        rows=torch.from_numpy(np.concatenate(rows)).to(device),
        offsets=torch.from_numpy(offsets).to(device),
        counts=torch.from_numpy(counts).to(device),
        obs_mean=obs_mean,
        obs_std=obs_std,
        obs_dim=family.obs_dim,
        act_dim=family.act_dim,
        context_dim=context_dim,
        fingerprint=omrl_envs.dataset_fingerprint(manifest, tasks),
    )


def load_select():
    """select.py as a module (its file name shadows the standard library's `select`, so import it by path)."""
    spec = importlib.util.spec_from_file_location("select_main", ROOT / "select.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["select_main"] = module
    spec.loader.exec_module(module)
    return module


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(loader: str, env_id: str, data_dir: str, normalize: bool) -> dict:
    """One load in this fresh process: peak RSS above the RSS before it, the rows' SHA-256, the fingerprint."""
    import torch

    sel = load_select()
    load = sel.load_offline_data if loader == "new" else lambda *a: old_load_offline_data(sel, *a)
    rss_before = current_rss_bytes()
    start = time.time()
    data = load(env_id, data_dir, normalize, torch.device("cpu"))
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    rows = data.rows.numpy()
    return {
        "loader": loader,
        "peak_bytes": peak - rss_before,
        "rows_bytes": rows.nbytes,
        "seconds": round(seconds, 1),
        "rows_sha256": hashlib.sha256(rows.data).hexdigest(),
        "content_hash": data.fingerprint["content_hash"],
        "obs_mean_sha256": hashlib.sha256(np.ascontiguousarray(data.obs_mean).data).hexdigest(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0, help="dataset size (float32 arrays), 1e9 bytes")
    parser.add_argument("--env-id", default="humanoid-dir", help="the family whose shapes the dataset has")
    parser.add_argument("--loaders", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True, help="normalise states")
    parser.add_argument("--json", action="store_true", help="print one JSON line per loader instead of a sentence")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    per_task = max(1, round(args.size_gb * 1e9 / dataset_bytes(args.env_id, omrl_envs.NUM_TASKS)))
    size = dataset_bytes(args.env_id, per_task * omrl_envs.NUM_TASKS)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        start = time.time()
        write_synthetic_dataset(Path(tmp), args.env_id, per_task)
        if not args.json:
            print(
                f"{args.env_id}-shaped synthetic dataset: 40 tasks x {per_task:,} transitions, {size / 1e9:.2f} GB of "
                f"float32 arrays (written in {time.time() - start:.0f} s); states normalised: {args.normalize}"
            )
        for loader in args.loaders:
            job = json.dumps([loader, args.env_id, tmp, args.normalize])
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", job], capture_output=True, text=True, env=env, cwd=ROOT
            )
            if proc.returncode != 0:
                raise SystemExit(f"error: the {loader} loader failed:\n{proc.stderr[-2000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1]) | {"dataset_bytes": size}
            result["ratio"] = round(result["peak_bytes"] / size, 3)
            results.append(result)
            if args.json:
                print(json.dumps(result))
            else:
                peak, rows = result["peak_bytes"] / 1e9, result["rows_bytes"] / 1e9
                print(
                    f"{loader} loader: peak {peak:.2f} GB above the process before loading = {result['ratio']:.2f} x "
                    f"the dataset (rows tensor {rows:.2f} GB; {result['seconds']:.0f} s)",
                    flush=True,
                )
    for key in ("rows_sha256", "content_hash", "obs_mean_sha256"):
        if len({r[key] for r in results}) > 1:
            raise SystemExit(f"error: the loaders differ in {key}")
    if len(results) > 1 and not args.json:
        print("both loaders give the same rows, statistics and fingerprint (SHA-256)")


if __name__ == "__main__":
    main()
