"""Checkpoints as the real frameworks write them: listed, ordered, resumed from and pruned.

The layouts come from the real libraries (tests/storage/make_checkpoint_layouts.py: Lightning,
HF Trainer, Accelerate, torch DCP) or, for DeepSpeed and Orbax, from their documented on-disk
formats. The CLI's rules (runctl.storage.checkpoints) and the agent's stdlib copy must agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runctl.storage.checkpoints import (
    list_checkpoints,
    name_numbers,
    pick_resume,
    plan_cleanup,
    resolve_resume,
    rows_from_keys,
    still_changing,
)
from tests.conftest import CLI, REPO, job_id_of

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory per framework, written once per module (about 10 s: imports)."""
    out = tmp_path_factory.mktemp("layouts")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "tests/storage/make_checkpoint_layouts.py"), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runctl_agent", REPO / "src/runctl/agent/runctl_agent.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy(layouts: Path, name: str, tmp_path: Path) -> Path:
    if not (layouts / name).exists():
        pytest.skip(f"{name} is not installed")
    dest = tmp_path / name
    shutil.copytree(layouts / name, dest)  # copy2 keeps the mtimes the order may rest on
    return dest


def _view(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.name, r.kind, r.step, r.complete) for r in rows]


EXPECTED = {
    "lightning": [
        ("epoch=0-step=2.ckpt", "file", 2, True),
        ("epoch=0-step=4.ckpt", "file", 4, True),
        ("epoch=1-step=6.ckpt", "file", 6, True),
        ("last.ckpt", "file", 6, True),  # its stored global_step, and written last
    ],
    "hf": [
        ("checkpoint-2", "hf", 2, True),
        ("checkpoint-4", "hf", 4, True),
        ("checkpoint-6", "hf", 6, True),
        ("model.safetensors", "file", None, True),  # trainer.save_model() at the end
    ],
    "accelerate": [
        ("checkpoints/checkpoint_0", "accelerate", 0, True),
        ("checkpoints/checkpoint_1", "accelerate", 1, True),
        ("checkpoints/checkpoint_2", "accelerate", 2, True),
    ],
    "dcp": [("step_10", "dcp", 10, True), ("step_20", "dcp", 20, True)],
    "deepspeed": [
        ("global_step2", "deepspeed", 2, True),
        ("global_step4", "deepspeed", 4, True),
        ("global_step6", "deepspeed", 6, False),  # `latest` still names global_step4
    ],
    "orbax": [
        ("100", "orbax", 100, True),
        ("200", "orbax", 200, True),
        ("300.orbax-checkpoint-tmp-1712345678", "orbax", 300, False),
    ],
    "plain": [
        ("step_0001.pt", "file", 1, True),
        ("best.pt", "file", None, True),  # epoch 1 stored inside
        ("step_0002.pt", "file", 2, True),
        ("step_0003.pt", "file", 3, True),
        ("final_checkpoint.pt", "file", None, True),
    ],
}
RESUME = {
    "lightning": ("last.ckpt", 6),
    "hf": ("checkpoint-6", 6),
    "accelerate": ("checkpoints/checkpoint_2", 2),
    "dcp": ("step_20", 20),
    "deepspeed": (".", 4),  # the directory holding `latest`, as engine.load_checkpoint takes
    "orbax": ("200", 200),
    "plain": ("final_checkpoint.pt", None),
}


@pytest.mark.parametrize("framework", sorted(EXPECTED))
def test_each_framework_lists_one_row_per_checkpoint_oldest_first(
    layouts: Path, framework: str, agent: ModuleType, tmp_path: Path
) -> None:
    root = _copy(layouts, framework, tmp_path)
    rows = list_checkpoints(root)
    assert _view(rows) == EXPECTED[framework]
    theirs = agent.list_checkpoints(str(root))
    assert [(r["name"], r["kind"], r["step"], r["complete"]) for r in theirs] == _view(rows)
    assert [r["bytes"] for r in theirs] == [r.bytes for r in rows]
    assert all(r.path.is_absolute() for r in rows)
    if framework in ("hf", "dcp", "accelerate", "deepspeed"):  # a row's size is the whole dir
        first = rows[0].path
        assert rows[0].bytes == sum(p.stat().st_size for p in first.rglob("*") if p.is_file())


@pytest.mark.parametrize("framework", sorted(RESUME))
def test_resume_from_is_what_the_framework_resume_api_takes(
    layouts: Path, framework: str, agent: ModuleType, tmp_path: Path
) -> None:
    root = _copy(layouts, framework, tmp_path)
    chosen, skipped = pick_resume(list_checkpoints(root))
    name, step = RESUME[framework]
    assert chosen is not None and chosen.resume_path == (root / name).resolve()
    assert chosen.step == step
    theirs, _ = agent.pick_resume(agent.list_checkpoints(str(root)))
    assert theirs["resume_path"] == str(chosen.resume_path) and theirs["step"] == step
    # DeepSpeed loads by tag: RUNCTL_RESUME_TAG names the chosen one, not what `latest` says.
    tag = "global_step4" if framework == "deepspeed" else None
    assert chosen.tag == theirs.get("tag") == tag
    if framework == "deepspeed":
        assert [s.name for s in skipped] == ["global_step6"]
        assert resolve_resume(root / "global_step2") == (root, 2, "global_step2")
        assert agent.resolve_resume(str(root / "global_step2")) == (str(root), 2, "global_step2")
    # Given a file inside a checkpoint directory (what the seed handed HF jobs), the
    # directory is what resumes.
    if framework == "hf":
        assert resolve_resume(root / "checkpoint-4" / "rng_state.pth") == (
            root / "checkpoint-4", 4, None)  # fmt: skip
        assert agent.resolve_resume(str(root / "checkpoint-4" / "rng_state.pth")) == (
            str(root / "checkpoint-4"), 4, None)  # fmt: skip


def test_the_chosen_checkpoints_load_with_their_framework(layouts: Path, tmp_path: Path) -> None:
    import torch

    root = _copy(layouts, "dcp", tmp_path)
    chosen, _ = pick_resume(list_checkpoints(root))
    assert chosen is not None
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    state = {"model": torch.nn.Linear(4, 1).state_dict(), "step": 0}
    with warnings.catch_warnings():  # "torch.distributed is disabled": one process, on purpose
        warnings.simplefilter("ignore")
        dcp_load(state, checkpoint_id=str(chosen.resume_path))
    assert state["step"] == 20
    lightning = _copy(layouts, "lightning", tmp_path)
    chosen, _ = pick_resume(list_checkpoints(lightning))
    assert chosen is not None
    assert chosen.resume_path is not None
    stored = torch.load(chosen.resume_path, map_location="cpu", weights_only=False)
    assert stored["global_step"] == chosen.step == 6


def test_names_lightning_hf_and_plain(agent: ModuleType) -> None:
    cases = {
        "epoch=3-step=400.ckpt": (400, 3),  # the step, not the epoch
        "epoch=3-step=400-v1.ckpt": (400, 3),
        "last.ckpt": (None, None),
        "last-v1.ckpt": (None, None),  # not step 1
        "best.pt": (None, None),
        "ckpt_epoch_0010.pt": (None, 10),
        "model-step-100.safetensors": (100, None),
        "step_7.pth": (7, None),
        "checkpoint-0042.ckpt": (42, None),
        "z_0005.pt": (5, None),
    }
    for name, expected in cases.items():
        assert name_numbers(name) == expected, name
        assert agent.name_numbers(name) == expected, name
    assert name_numbers("checkpoint-500", True) == (500, None)
    assert name_numbers("global_step12", True) == (12, None)
    assert name_numbers("300.orbax-checkpoint-tmp-99", True) == (300, None)


def test_truncated_and_half_written_checkpoints_are_skipped(
    layouts: Path, agent: ModuleType, tmp_path: Path
) -> None:
    lightning = _copy(layouts, "lightning", tmp_path)
    data = (lightning / "last.ckpt").read_bytes()
    (lightning / "last.ckpt").write_bytes(data[: len(data) // 2])  # a crash mid-write
    chosen, skipped = pick_resume(list_checkpoints(lightning))
    assert chosen is not None and chosen.name == "epoch=1-step=6.ckpt"
    assert [(s.name, s.problem) for s in skipped] == [
        ("last.ckpt", "truncated: no zip end record")]  # fmt: skip
    hf = _copy(layouts, "hf", tmp_path)
    (hf / "checkpoint-6" / "trainer_state.json").unlink()
    chosen, skipped = pick_resume(list_checkpoints(hf))
    assert chosen is not None and chosen.name == "checkpoint-4"
    assert skipped[0].name == "checkpoint-6" and "trainer_state.json" in str(skipped[0].problem)
    theirs, their_skipped = agent.pick_resume(agent.list_checkpoints(str(hf)))
    assert theirs["name"] == "checkpoint-4" and their_skipped[0]["name"] == "checkpoint-6"
    acc = _copy(layouts, "accelerate", tmp_path)
    (acc / "checkpoints" / "checkpoint_2" / "random_states_0.pkl").unlink()
    chosen, _ = pick_resume(list_checkpoints(acc))
    assert chosen is not None and chosen.name == "checkpoints/checkpoint_1"
    dcp = _copy(layouts, "dcp", tmp_path)
    (dcp / "step_20" / ".metadata").unlink()  # written last by dcp.save
    assert [r.name for r in list_checkpoints(dcp)] == ["step_10"]  # a bare dir: no checkpoint
    safetensors = tmp_path / "st"
    shutil.copytree(hf / "checkpoint-4", safetensors / "step_4")
    whole = (safetensors / "step_4" / "model.safetensors").read_bytes()
    (safetensors / "model_1.safetensors").write_bytes(whole)
    (safetensors / "model_2.safetensors").write_bytes(whole[:-10])
    rows = {r.name: r for r in list_checkpoints(safetensors)}
    assert rows["model_1.safetensors"].complete and not rows["model_2.safetensors"].complete


def _cut(path: Path, keep: int | None = None) -> None:
    """A crash mid-write (or a full disk): the file ends early."""
    os.truncate(path, path.stat().st_size // 2 if keep is None else keep)


# (layout, directory, file cut short inside it, the checkpoint resumed from instead)
INNER_TRUNCATIONS = [
    ("hf", "checkpoint-6", "optimizer.pt", "checkpoint-4"),
    ("hf", "checkpoint-6", "model.safetensors", "checkpoint-4"),
    ("accelerate", "checkpoints/checkpoint_2", "optimizer.bin", "checkpoints/checkpoint_1"),
    ("accelerate", "checkpoints/checkpoint_2", "random_states_0.pkl", "checkpoints/checkpoint_1"),
    ("deepspeed", "global_step4", "mp_rank_00_model_states.pt", "global_step2"),
    ("deepspeed", "global_step4", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "global_step2"),
]


@pytest.mark.parametrize(("framework", "directory", "inner", "previous"), INNER_TRUNCATIONS)
def test_a_truncated_file_inside_a_checkpoint_directory_makes_it_incomplete(
    layouts: Path, agent: ModuleType, tmp_path: Path, framework: str, directory: str,
    inner: str, previous: str,
) -> None:  # fmt: skip
    root = _copy(layouts, framework, tmp_path)
    target = root / directory / inner
    if not target.exists():  # the framework's version names it otherwise
        pytest.skip(f"{framework} wrote no {inner}: {sorted(os.listdir(root / directory))}")
    _cut(target)
    rows = {r.name: r for r in list_checkpoints(root)}
    theirs = {r["name"]: r for r in agent.list_checkpoints(str(root))}
    assert not rows[directory].complete and theirs[directory]["complete"] is False
    assert rows[directory].problem == theirs[directory]["problem"]
    assert str(rows[directory].problem).startswith(f"{inner}: truncated"), rows[directory]
    assert all(r.complete for name, r in rows.items() if name == previous)
    chosen, skipped = pick_resume(list(rows.values()))
    their_choice, their_skipped = agent.pick_resume(agent.list_checkpoints(str(root)))
    assert chosen is not None and chosen.name == previous == their_choice["name"]
    assert directory in [s.name for s in skipped] and directory in [
        s["name"] for s in their_skipped]  # fmt: skip
    if framework == "deepspeed":  # `latest` still names the broken one: the tag says which
        assert (root / "latest").read_text().strip() == directory
        assert chosen.tag == their_choice["tag"] == previous
        assert resolve_resume(root) == (root, 2, previous)
        assert agent.resolve_resume(str(root)) == (str(root), 2, previous)


def test_only_known_formats_inside_a_checkpoint_are_checked(tmp_path: Path) -> None:
    """A checkpoint directory may hold anything beside its weights (logs, a tokenizer, an
    empty notes file): only torch zips, safetensors and the like decide completeness."""
    import torch

    ck = tmp_path / "checkpoint-2"
    ck.mkdir()
    torch.save({"w": torch.zeros(4)}, ck / "optimizer.pt")
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (ck / "notes.txt").write_text("")
    (ck / "tokenizer.json").write_text('{"half": ')
    (ck / "rng_state.pth").write_bytes(b"\x80\x02}q\x00.")  # a legacy (non-zip) torch file
    rows = list_checkpoints(tmp_path)
    assert [(r.name, r.complete) for r in rows] == [("checkpoint-2", True)]


def test_a_checkpoint_still_growing_is_not_offered(tmp_path: Path) -> None:
    import torch

    torch.save({"step": 1}, tmp_path / "step_1.pt")
    growing = tmp_path / "step_2.pt"
    growing.write_bytes(b"\0" * 100)  # not a zip: only its size can tell
    stop = threading.Event()

    def write() -> None:
        with open(growing, "ab") as fh:
            while not stop.is_set():
                fh.write(b"\0" * 100)
                fh.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        rows = list_checkpoints(tmp_path)
        assert still_changing(rows) == {growing}
        chosen, skipped = pick_resume(rows)
        assert chosen is not None and chosen.name == "step_1.pt"
        assert skipped[0].problem == "size changing: still being written"
    finally:
        stop.set()
        writer.join()


def _names(rows: list[Any]) -> list[str]:
    return [r.name for r in rows]


def test_cleanup_plans_whole_checkpoints_and_spares_the_newest(
    layouts: Path, agent: ModuleType, tmp_path: Path
) -> None:
    plans = {
        "lightning": ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"],  # last.ckpt is kept
        "hf": ["checkpoint-2", "checkpoint-4"],  # the final model.safetensors is left be
        "accelerate": ["checkpoints/checkpoint_0", "checkpoints/checkpoint_1"],
        "dcp": ["step_10"],
        "deepspeed": ["global_step2"],  # global_step6 is newer than `latest`: maybe writing
        "orbax": ["100"],
        "plain": ["step_0001.pt", "step_0002.pt"],  # never best.pt or final_checkpoint.pt
    }
    for framework, doomed in plans.items():
        if not (layouts / framework).exists():
            continue
        rows = list_checkpoints(layouts / framework)
        assert _names(plan_cleanup(rows, 1)) == doomed, framework
        theirs = agent.list_checkpoints(str(layouts / framework))
        assert [r["name"] for r in agent.plan_cleanup(theirs, 1)] == doomed, framework
    # keep 0 still keeps the newest complete one; --include names a protected one
    rows = list_checkpoints(layouts / "plain")
    assert _names(plan_cleanup(rows, 0)) == ["step_0001.pt", "step_0002.pt"]
    assert _names(plan_cleanup(rows, 0, ("best.pt",))) == [
        "step_0001.pt", "best.pt", "step_0002.pt"]  # fmt: skip


def test_cleanup_spares_what_last_ckpt_links_to(tmp_path: Path) -> None:
    import torch

    for step in (2, 4):
        torch.save({"global_step": step}, tmp_path / f"epoch=0-step={step}.ckpt")
    (tmp_path / "last.ckpt").symlink_to(tmp_path / "epoch=0-step=2.ckpt")  # save_last="link"
    assert plan_cleanup(list_checkpoints(tmp_path), 1) == []


def test_cli_cleanup_deletes_exactly_what_the_dry_run_printed(
    cli: CLI, layouts: Path, tmp_path: Path
) -> None:
    hf = _copy(layouts, "hf", tmp_path)
    (hf / "checkpoint-8").mkdir()  # a checkpoint the trainer is writing right now
    (hf / "checkpoint-8" / "model.safetensors").write_bytes(b"partial")
    dry = cli("checkpoint", "cleanup", str(hf), "--keep-last-n", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["would_delete"]
    assert [Path(p).name for p in planned] == ["checkpoint-2", "checkpoint-4"]
    assert (hf / "checkpoint-2").is_dir()
    done = cli("checkpoint", "cleanup", str(hf), "--keep-last-n", "1", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == planned
    left = sorted(p.name for p in hf.iterdir())
    assert left == ["checkpoint-6", "checkpoint-8", "config.json", "model.safetensors",
                    "training_args.bin"]  # fmt: skip
    assert sorted(p.name for p in (hf / "checkpoint-6").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt",
        "trainer_state.json", "training_args.bin"]  # fmt: skip
    listed = json.loads(cli("checkpoint", "list", str(hf), "--json").stdout)
    assert [(r["name"], r["complete"]) for r in listed] == [
        ("checkpoint-6", True), ("model.safetensors", True), ("checkpoint-8", False)]  # fmt: skip
    text = cli("checkpoint", "list", str(hf)).stdout
    assert "no: no trainer_state.json" in text and "hf" in text


def test_cli_info_on_files_and_directories(cli: CLI, layouts: Path, tmp_path: Path) -> None:
    hf = _copy(layouts, "hf", tmp_path)
    info = json.loads(cli("checkpoint", "info", str(hf / "checkpoint-4"), "--json").stdout)
    assert (info["kind"], info["step"], info["epoch"], info["source"]) == (
        "hf", 4, 1.0, "trainer_state.json")  # fmt: skip
    assert "loss" in info and info["complete"] is True
    inner = cli("checkpoint", "info", str(hf / "checkpoint-4" / "model.safetensors"), "--json")
    assert json.loads(inner.stdout)["tensors"] > 0, inner.stderr
    newest = json.loads(cli("checkpoint", "info", str(hf), "--json").stdout)
    assert newest["path"] == str(hf / "checkpoint-6")
    dcp = _copy(layouts, "dcp", tmp_path)
    info = json.loads(cli("checkpoint", "info", str(dcp / "step_20"), "--json").stdout)
    assert (info["kind"], info["step"], info["source"]) == ("dcp", 20, ".metadata")
    assert info["tensor_elements"] == 5  # Linear(4, 1): 4 weights + 1 bias
    deepspeed = _copy(layouts, "deepspeed", tmp_path)  # the save dir: what `latest` names
    info = json.loads(cli("checkpoint", "info", str(deepspeed), "--json").stdout)
    assert (info["path"], info["step"], info["resume_path"]) == (
        str(deepspeed / "global_step4"), 4, str(deepspeed))  # fmt: skip
    assert info["source"] == "mp_rank_00_model_states.pt"
    lightning = _copy(layouts, "lightning", tmp_path)
    info = json.loads(cli("checkpoint", "info", str(lightning / "last.ckpt"), "--json").stdout)
    assert (info["global_step"], info["epoch"], info["source"]) == (6, 1, "torch")
    missing = cli("checkpoint", "info", str(tmp_path / "nope"))
    assert missing.returncode == 5 and "Traceback" not in missing.stderr


def test_s3_keys_group_into_directory_checkpoints() -> None:
    objects = [
        ("run/checkpoint-2/model.safetensors", 100, 1.0),
        ("run/checkpoint-2/trainer_state.json", 10, 1.0),
        ("run/checkpoint-4/model.safetensors", 100, 2.0),
        ("run/checkpoint-4/trainer_state.json", 10, 2.0),
        ("run/checkpoint-6/model.safetensors", 100, 3.0),  # uploaded in part
        ("run/best.pt", 5, 0.5),
        ("run/notes.txt", 5, 0.5),
    ]
    found = rows_from_keys("run", objects)
    assert [(k.row.name, k.row.kind, k.row.bytes, k.row.complete) for k in found] == [
        ("best.pt", "file", 5, True),
        ("checkpoint-2", "hf", 110, True),
        ("checkpoint-4", "hf", 110, True),
        ("checkpoint-6", "hf", 100, False),
    ]
    assert found[1].keys == ("run/checkpoint-2/model.safetensors",
                             "run/checkpoint-2/trainer_state.json")  # fmt: skip
    doomed = plan_cleanup([k.row for k in found], 1, realpath=lambda p: p)
    assert _names(doomed) == ["checkpoint-2"]


def test_a_job_resumes_past_a_truncated_newest_checkpoint_and_says_so(
    cli: CLI, project: Path, tmp_path: Path
) -> None:
    import torch

    ck = tmp_path / "job-ck"
    ck.mkdir()
    for step in (1, 2, 3):
        torch.save({"step": step}, ck / f"step_{step}.pt")
    data = (ck / "step_3.pt").read_bytes()
    (ck / "step_3.pt").write_bytes(data[:-30])  # the end record is gone
    (project / "show.py").write_text(
        "import os\n"
        "print('from', os.environ['RUNCTL_RESUME_FROM'])\n"
        "print('step', os.environ.get('RUNCTL_RESUME_STEP'))\n"
    )
    job = job_id_of(cli("run", "--checkpoint-dir", str(ck), "--wait", "show.py", cwd=project))
    log = cli("logs", job).stdout
    assert "[runctl] skipped checkpoint step_3.pt (truncated: no zip end record); resuming " \
        "from step_2.pt" in log  # fmt: skip
    assert f"from {ck / 'step_2.pt'}" in log and "step 2" in log


def test_a_deepspeed_job_gets_the_chosen_tag_and_resume_from_a_named_tag_keeps_it(
    cli: CLI, project: Path, layouts: Path, tmp_path: Path
) -> None:
    """`latest` names global_step4; with global_step4's model states cut short the job is
    told global_step2. Whole again, `checkpoint resume --from global_step2` still hands on
    global_step2 (the save dir alone would load what `latest` names)."""
    ck = _copy(layouts, "deepspeed", tmp_path)
    states = ck / "global_step4" / "mp_rank_00_model_states.pt"
    whole = states.read_bytes()
    _cut(states)
    (project / "show.py").write_text(
        "import os\n"
        "for name in ('FROM', 'STEP', 'TAG'):\n"
        "    print(name, os.environ.get('RUNCTL_RESUME_' + name))\n"
    )
    job = job_id_of(cli("run", "--checkpoint-dir", str(ck), "--wait", "show.py", cwd=project))
    log = cli("logs", job).stdout
    assert f"FROM {ck}\nSTEP 2\nTAG global_step2" in log, log
    assert "skipped checkpoint global_step4 (mp_rank_00_model_states.pt: truncated" in log
    states.write_bytes(whole)
    again = cli("checkpoint", "resume", job, "--from", "global_step2", "--json", cwd=project)
    resumed = json.loads(again.stdout)["job_id"]
    assert cli("wait", resumed).returncode == 0
    log = cli("logs", resumed).stdout
    assert f"FROM {ck}\nSTEP 2\nTAG global_step2" in log, log


@pytest.mark.integration
def test_hf_checkpoints_on_s3_list_info_and_cleanup_whole(
    cli: CLI, seaweed: Any, layouts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.stands.seaweed import new_bucket

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = seaweed.env()
    bucket = new_bucket(seaweed, "ckdirs")
    hf = _copy(layouts, "hf", tmp_path)
    (hf / "checkpoint-8").mkdir()  # its upload was cut short: no trainer_state.json
    shutil.copy(hf / "checkpoint-6" / "model.safetensors", hf / "checkpoint-8")
    up = cli("s3", "upload", str(hf), f"s3://{bucket}/run/", "-r", "--json", env=env)
    assert up.returncode == 0, up.stderr
    listed = json.loads(cli("checkpoint", "list", f"s3://{bucket}/run/", "--json", env=env).stdout)
    dirs = [(r["name"], r["kind"], r["step"], r["complete"]) for r in listed if r["kind"] == "hf"]
    assert dirs == [("checkpoint-2", "hf", 2, True), ("checkpoint-4", "hf", 4, True),
                    ("checkpoint-6", "hf", 6, True), ("checkpoint-8", "hf", 8, False)]  # fmt: skip
    info = cli("checkpoint", "info", f"s3://{bucket}/run/checkpoint-4/", "--json", env=env)
    assert info.returncode == 0, info.stderr
    got = json.loads(info.stdout)
    assert (got["step"], got["epoch"], got["source"]) == (4, 1.0, "trainer_state.json")
    assert got["objects"] == 7 and got["complete"] is True
    newest = json.loads(cli("checkpoint", "info", f"s3://{bucket}/run", "--json", env=env).stdout)
    assert newest["path"] == f"s3://{bucket}/run/checkpoint-6/"
    dry = cli("s3", "cleanup", f"s3://{bucket}/run", "--keep-last-n", "1", "--dry-run",
              "--json", env=env)  # fmt: skip
    plan = json.loads(dry.stdout)
    assert plan["deleted"] == ["run/checkpoint-2/", "run/checkpoint-4/"], dry.stderr
    assert plan["objects"] == 14
    done = cli("s3", "cleanup", f"s3://{bucket}/run", "--keep-last-n", "1", "--yes", "--json",
               env=env)  # fmt: skip
    assert json.loads(done.stdout)["deleted"] == plan["deleted"], done.stderr
    keys = json.loads(cli("s3", "list", f"s3://{bucket}/run/", "-r", "--json", env=env).stdout)
    left = sorted({o["key"].split("/")[1] for o in keys["objects"]})
    assert left == ["checkpoint-6", "checkpoint-8", "config.json", "model.safetensors",
                    "training_args.bin"]  # fmt: skip
    assert len([o for o in keys["objects"] if "/checkpoint-6/" in o["key"]]) == 7


def _oldest_python() -> str | None:
    candidates = [shutil.which(n) for n in ("python3.8", "python3.9")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.[89].*/bin/python3"))
    for found in candidates:
        if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
            return found
    return None


def test_the_agent_on_an_old_host_python_lists_the_same(layouts: Path) -> None:
    """Hosts run the agent with their own python3 (3.8 and up): same rows, same order."""
    python = _oldest_python()
    if python is None:
        pytest.skip("no python3.8/3.9 here")
    agent_file = REPO / "src/runctl/agent/runctl_agent.py"
    for framework in EXPECTED:
        if not (layouts / framework).exists():
            continue
        argv = [python, str(agent_file), "checkpoints", "--dir", str(layouts / framework)]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        theirs = [
            (r["name"], r["kind"], r["step"], r["complete"]) for r in json.loads(done.stdout)
        ]
        assert theirs == _view(list_checkpoints(layouts / framework)), framework
