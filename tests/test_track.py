"""--track (Weights and Biases, as CleanRL's): a tiny select.py run tracked offline, read back from the run's own
transaction log; and the one-line error of every script when wandb is not installed."""

import json
import struct
from pathlib import Path

import pytest
from conftest import ROOT, run_script
from test_select import TINY, assert_one_line_error, scalars, write_scripted_point_robot_dataset

SCRIPTS = ["select.py", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "baselines").glob("*.py"))]


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (run-<id>.wandb), which wandb writes and reads but gives no reader for:
    a 7-byte file header (":W&B", magic, version), then LevelDB-log blocks of 32 KiB, each record a 7-byte header
    (CRC, length, type: 1 full, 2 first, 3 middle, 4 last) and its bytes; a whole record is one protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, index, parts = [], header, b""
    while index + header <= len(data):
        if block - index % block < header:  # too little room left for a header: the block is padded
            index += block - index % block
            continue
        _, length, kind = struct.unpack("<IHB", data[index : index + header])
        if kind == 0:  # zero padding: the end of what was written
            break
        parts += data[index + header : index + header + length]
        index += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def key(item) -> str:
    """A history or summary item's key (the scalars mirrored from TensorBoard come as a one-part nested key)."""
    return item.key or "/".join(item.nested_key)


def test_track_writes_the_scalars_and_the_final_evaluation_to_an_offline_wandb_run(tmp_path):
    pytest.importorskip("wandb")
    write_scripted_point_robot_dataset(tmp_path / "data", checkpoints=3, episodes=4)
    wandb_dir = tmp_path / "wandb-files"
    environment = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir)}  # no network
    environment |= {name: str(tmp_path / name.lower()) for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR")}
    run_script(
        "select.py", "--data-dir", tmp_path / "data", "--runs-dir", tmp_path / "runs", "--run-name", "tracked", *TINY,
        "--protocols", "offline", "online-proximal", "--track", "--wandb-project-name", "test-project",
        env=environment,
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "tracked"
    (offline_run,) = (wandb_dir / "wandb").glob("offline-run-*")
    assert (offline_run / "files" / "code" / "select.py").is_file()  # save_code
    records = wandb_records(next(offline_run.glob("run-*.wandb")))

    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "tracked" and run.project == "test-project"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["track"] is True and config["env_id"] == "point-robot" and config["num_train_steps"] == 40

    # Every TensorBoard scalar reaches the W&B history (sync_tensorboard), with its values
    history = [{key(item): json.loads(item.value_json) for item in r.history.item} for r in records if r.history.item]
    logged = scalars(run_dir)
    assert {"losses/critic_loss", "charts/SPS", "eval/offline/return", "eval/online-proximal/return"} <= set(logged)
    for tag, points in logged.items():
        mirrored = {row["global_step"]: row[tag] for row in history if tag in row}
        assert set(mirrored) == {step for step, _ in points}, tag
        assert [mirrored[step] for step, _ in points] == pytest.approx([value for _, value in points], rel=1e-6), tag

    # The final evaluation in the summary
    summary = {}
    for r in records:
        for item in r.summary.update:
            summary[key(item)] = json.loads(item.value_json)
    final = json.loads((run_dir / "final_eval.json").read_text())
    for protocol in ("offline", "online-proximal"):
        assert summary[f"final_eval/{protocol}/return"] == final["protocols"][protocol]["return"]
        assert summary[f"final_eval/{protocol}/context_shift"] == final["protocols"][protocol]["context_shift"]
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # wandb.finish() closed the run


@pytest.mark.parametrize("script", SCRIPTS)
def test_track_without_wandb_installed_is_one_line(script, tmp_path):
    """The error comes before any data are read (the data dir here is empty)."""
    code = (
        "import runpy, sys\n"
        "sys.modules['wandb'] = None  # as if not installed\n"
        f"sys.argv = [{script!r}, '--track', '--data-dir', {str(tmp_path)!r}, '--runs-dir', {str(tmp_path)!r}]\n"
        f"runpy.run_path({script!r}, run_name='__main__')\n"
    )
    proc = run_script("-c", code, check=False, timeout=120)
    assert_one_line_error(proc, "--track needs wandb", "requirements-extras.txt")
    assert not list(tmp_path.iterdir())
