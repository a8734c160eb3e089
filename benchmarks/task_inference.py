"""Which task does a run's z point at? Distances from each run's final z to the test tasks' offline z, from the JSON
of a re-evaluation (`<script> --eval-checkpoint ... --eval-output x.json` keeps each run's final z and each test
task's offline z).

    python select.py --eval-checkpoint runs/study/point-robot/select__d0__s3/checkpoint.pt --eval-output z.json
    python benchmarks/task_inference.py z.json --protocol online-proximal

Per test task (mean over its runs): the final return; the distance from the final z to its own offline z and to the
nearest other test task's, in units of the mean distance between test tasks' offline z (the context-shift ratio's
unit); which test task's offline z is nearest; and, on a goal family, the distance to the offline z of the test task
whose goal is the mirror image (the same y, the opposite x: Point-Robot's half circle seen from its two ends).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: the standard library's `select` stays first
import omrl_envs  # noqa: E402


def mirror_tasks(env_id: str, test_tasks: list[int]) -> dict[int, int] | None:
    """For a family with goals: each test task's test task whose goal angle is nearest pi minus its own."""
    tasks = omrl_envs.task_list(env_id)
    if "goal" not in tasks[0]:
        return None
    angle = {t: math.atan2(tasks[t]["goal"][1], tasks[t]["goal"][0]) for t in test_tasks}
    return {t: min(test_tasks, key=lambda u: abs(angle[u] - (math.pi - angle[t]))) for t in test_tasks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reevaluation", type=Path, help="the --eval-output JSON of a re-evaluation")
    parser.add_argument("--protocol", default="online-proximal")
    args = parser.parse_args()
    record = json.loads(args.reevaluation.read_text())
    result = record["protocols"].get(args.protocol)
    if result is None or "z_final" not in result:
        sys.exit(f"error: {args.reevaluation} has no final z of {args.protocol}; re-evaluate with this checkout")
    env_id = record["args"]["env_id"]
    run_tasks, z = result["z_final"]["tasks"], np.asarray(result["z_final"]["z"])
    test_tasks, z_offline = result["z_offline"]["tasks"], np.asarray(result["z_offline"]["z"])
    between = np.linalg.norm(z_offline[:, None] - z_offline[None], axis=-1)
    unit = between.sum() / (len(test_tasks) * (len(test_tasks) - 1))
    distances = np.linalg.norm(z[:, None] - z_offline[None], axis=-1) / unit  # (runs, test tasks)
    mirror = mirror_tasks(env_id, test_tasks)
    print(f"{args.reevaluation}: {env_id}, {args.protocol}, step {record.get('step')}; distances in units of the mean"
          f" distance between test tasks' offline z ({unit:.3g})")  # fmt: skip
    header = ["task", "return", "to own", "nearest other (task)", "nearest task"]
    print(" | ".join(header + (["to mirror (task)"] if mirror else [])))
    for k, t in enumerate(test_tasks):
        rows = [i for i, task in enumerate(run_tasks) if task == t]
        d = distances[rows].mean(0)
        others = [j for j in range(len(test_tasks)) if j != k]
        nearest_other = min(others, key=lambda j: d[j])
        nearest = test_tasks[int(np.argmin(d))]
        line = [str(t), f"{result['per_task'][str(t)]:.2f}", f"{d[k]:.2f}",
                f"{d[nearest_other]:.2f} ({test_tasks[nearest_other]})", str(nearest)]  # fmt: skip
        if mirror:
            line.append(f"{d[test_tasks.index(mirror[t])]:.2f} ({mirror[t]})")
        print(" | ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
