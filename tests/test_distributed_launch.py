"""The launch as data: the torchrun command, the strategy choice, the trainer settings for DDP,
FSDP2 and DeepSpeed (FSDP and DeepSpeed cannot run on a CPU, so what the runner hands the
trainer is checked here and run by bench/gpu_checks.sh on GPUs), the guards, the world-size
arithmetic of resume, and the Slurm script line by line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.profile import load_profile
from workbench.pipeline import launch as D
from workbench.train import ranks as R
from workbench.pipeline.launch_script import slurm_script


class FakePlan:
    """The two fields of a Plan the trainer settings read."""

    def __init__(self, precision="bf16", gradient_checkpointing=True):
        self.precision = precision
        self.gradient_checkpointing = gradient_checkpointing


def launch(**kw) -> D.Launch:
    base = dict(nproc_per_node=4, nnodes=1, node_rank=0, master_addr="127.0.0.1",
                master_port=29500, device="cuda", strategy="ddp", zero_stage=3,
                cpu_offload=False, why="test")
    base.update(kw)
    return D.Launch(**base)


# ---- choosing the launch -------------------------------------------------------------------

def test_one_process_is_todays_path():
    p = load_profile("demo")
    assert D.plan_launch(p, "cpu", 0) is None
    assert D.plan_launch(p, "cuda", 1) is None  # gpus = "auto" on a one-GPU box


def test_gpus_asked_on_a_cpu_run_is_an_error():
    with pytest.raises(D.DistributedError, match="distributed.gpus = 4 but this run is on the CPU"):
        D.plan_launch(load_profile("demo", ["distributed.gpus=4"]), "cpu", 0)


def test_cpu_processes_run_ddp_on_gloo():
    p = load_profile("demo", ["distributed.processes=3"])
    got = D.plan_launch(p, "cpu", 0)
    assert (got.nproc_per_node, got.device, got.strategy, got.world_size) == (3, "cpu", "ddp", 3)
    assert "gloo" in got.describe()


def test_gpus_auto_list_and_too_many():
    p = load_profile("demo", ["train.device=\"auto\"", "lora.method=\"lora\""])
    got = D.plan_launch(p, "cuda", 8, replica_fits=lambda: (True, "fits"))
    assert got.nproc_per_node == 8 and got.visible_gpus == "" and got.strategy == "ddp"
    p = load_profile("demo", ['distributed.gpus="0,3,5"'])
    got = D.plan_launch(p, "cuda", 8, replica_fits=lambda: (True, "fits"))
    assert got.nproc_per_node == 3 and got.visible_gpus == "0,3,5"
    with pytest.raises(D.DistributedError, match="names GPU 5, but this machine shows GPUs 0..3"):
        D.plan_launch(p, "cuda", 4)
    with pytest.raises(D.DistributedError, match="distributed.gpus = 6 but this machine shows 2"):
        D.plan_launch(load_profile("demo", ["distributed.gpus=6"]), "cuda", 2)


def test_auto_strategy_follows_the_estimator():
    p = load_profile("demo", ["distributed.gpus=2"])
    assert D.plan_launch(p, "cuda", 2, replica_fits=lambda: (False, "too big")).strategy == "fsdp"
    got = D.plan_launch(p, "cuda", 2, replica_fits=lambda: (True, "a replica fits"))
    assert got.strategy == "ddp" and got.why == "a replica fits"
    # Asked for explicitly, the estimator is not consulted.
    p = load_profile("demo", ["distributed.gpus=2", 'distributed.strategy="deepspeed"',
                              "distributed.zero_stage=2"])
    got = D.plan_launch(p, "cuda", 2, replica_fits=lambda: pytest.fail("consulted"))
    assert (got.strategy, got.zero_stage) == ("deepspeed", 2)
    assert "deepspeed ZeRO-2" in got.describe()


def test_torchrun_command_one_node_and_several():
    one = D.torchrun_command(launch(nproc_per_node=4), "/runs/r", python="python")
    assert one == ["python", "-m", "torch.distributed.run", "--nproc-per-node=4",
                   "--max-restarts=0", f"--monitor-interval={D.MONITOR_INTERVAL_S}",
                   "--standalone", "-m", "workbench.pipeline.launch", "rank", "/runs/r"]
    multi = D.torchrun_args(launch(nnodes=2, node_rank=1, master_addr="10.0.0.5",
                                   master_port=29400), "/runs/r", resume=True)
    assert "--standalone" not in multi
    assert multi[3:7] == ["--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.5",
                          "--master-port=29400"]
    assert multi[-1] == "--resume"
    # torchrun itself accepts them.
    from torch.distributed.run import config_from_args, parse_args

    config, cmd, args = config_from_args(parse_args(multi))
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 2, 4)
    assert args[-4:] == ["workbench.pipeline.launch", "rank", "/runs/r", "--resume"]


# ---- what the trainer is handed ------------------------------------------------------------

def test_single_process_gets_no_settings():
    assert R.trainer_settings(FakePlan(), launch={"nproc_per_node": 1, "nnodes": 1}) == {}


def test_ddp_settings():
    got = R.trainer_settings(FakePlan(), launch=launch().to_dict())
    assert got == {"ddp_backend": "nccl", "ddp_timeout": R.COLLECTIVE_TIMEOUT_S,
                   "ddp_find_unused_parameters": False}
    cpu = R.trainer_settings(FakePlan(), launch=launch(device="cpu").to_dict())
    assert cpu["ddp_backend"] == "gloo"
    assert R.COLLECTIVE_TIMEOUT_S >= 3600  # tokenizing a big dataset on rank 0 first


def test_fsdp2_settings_are_accepted_by_transformers(tmp_path):
    got = R.trainer_settings(FakePlan(), launch=launch(strategy="fsdp", cpu_offload=True).to_dict())
    assert got["fsdp"] is True and got["activation_checkpointing"] is False  # FSDP's own instead
    cfg = got["fsdp_config"]
    assert cfg["version"] == 2 and cfg["state_dict_type"] == "FULL_STATE_DICT"
    assert cfg["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and cfg["cpu_offload"] is True
    assert cfg["activation_checkpointing"] is True and cfg["reshard_after_forward"] is True
    assert R.fsdp_config(FakePlan(gradient_checkpointing=False))["activation_checkpointing"] is False
    qlora = FakePlan()
    qlora.profile = load_profile("demo", ['lora.method="qlora"', 'train.device="auto"'])
    # prepare_model_for_kbit_training already checkpoints the model: not twice.
    assert R.fsdp_config(qlora)["activation_checkpointing"] is False
    # transformers turns them into accelerate's FSDP plugin arguments: what would run on GPUs.
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), fsdp=got["fsdp"],
                             fsdp_config=dict(cfg), use_cpu=True, gradient_checkpointing=True,
                             activation_checkpointing=got["activation_checkpointing"])
    assert args.gradient_checkpointing is False  # the runner's flag is overridden
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["cpu_offload"] is True
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["reshard_after_forward"] is True


@pytest.mark.parametrize("stage,offload", [(2, False), (3, False), (3, True), (2, True)])
def test_deepspeed_settings(stage, offload):
    got = R.trainer_settings(FakePlan(precision="bf16"),
                             launch=launch(strategy="deepspeed", zero_stage=stage,
                                           cpu_offload=offload).to_dict())
    cfg = got["deepspeed"]
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage and cfg["bf16"] == {"enabled": True}
    assert cfg["fp16"] == {"enabled": False}
    # HF fills "auto" from the trainer's own arguments: one source of truth for batch sizes.
    assert cfg["train_micro_batch_size_per_gpu"] == cfg["gradient_accumulation_steps"] == "auto"
    if stage == 3:  # or the saved adapter is empty (40 bytes)
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert ("offload_optimizer" in zero) == offload
    assert ("offload_param" in zero) == (offload and stage == 3)
    json.dumps(cfg)  # written as a file by HF: plain data only


# ---- guards ------------------------------------------------------------------------------------

@pytest.fixture
def under_launch(monkeypatch):
    def use(**kw):
        monkeypatch.setenv("WORKBENCH_LAUNCH", json.dumps(launch(**kw).to_dict()))
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", "2")
        monkeypatch.setenv("LOCAL_RANK", "2")
    return use


def test_each_rank_loads_to_its_own_gpu(under_launch):
    import torch
    from transformers import BitsAndBytesConfig

    under_launch(strategy="ddp")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.bfloat16)
    got = R.adjust_load_kwargs({"device_map": {"": 0}, "quantization_config": quant,
                                "dtype": torch.bfloat16}, FakePlan())
    assert got["device_map"] == {"": 2}
    with pytest.raises(D.DistributedError, match='device_map="auto"'):
        R.adjust_load_kwargs({"device_map": "auto"}, FakePlan())


def test_qlora_fsdp_needs_quant_storage_in_the_model_dtype(under_launch):
    import torch
    from transformers import BitsAndBytesConfig

    under_launch(strategy="fsdp")
    bad = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.uint8)
    with pytest.raises(D.DistributedError, match="bnb_4bit_quant_storage"):
        R.adjust_load_kwargs({"quantization_config": bad, "dtype": torch.bfloat16}, FakePlan())
    good = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.bfloat16)
    got = R.adjust_load_kwargs({"quantization_config": good, "dtype": torch.bfloat16,
                                "device_map": {"": 0}}, FakePlan())
    assert "device_map" not in got  # loaded on CPU, sharded by FSDP


def test_runner_qlora_storage_matches_the_model_dtype():
    """The runner itself builds the 4-bit config with storage = compute = model dtype."""
    import inspect

    from workbench.train import runner

    src = inspect.getsource(runner.load_model)
    assert "bnb_4bit_quant_storage=compute" in src and "bnb_4bit_compute_dtype=compute" in src


def test_runner_hands_ddp_settings_to_sftconfig(tmp_path):
    """build_args in a real (one-member) gloo process group under a CPU launch:
    non-reentrant checkpointing, no unused-parameter search, gloo, the long timeout."""
    script = tmp_path / "args.py"
    script.write_text(
        "import json, os\n"
        "from workbench.profile import load_profile\n"
        "from workbench.train import ranks as D\n"
        "from workbench.train.plan import Plan\n"
        "from workbench.rundir import RunDir\n"
        "from trl import SFTConfig\n"
        "from workbench.train.arguments import training_arguments\n"
        "os.environ['WORKBENCH_LAUNCH'] = json.dumps(dict(nproc_per_node=2, nnodes=1, "
        "device='cpu', strategy='ddp', zero_stage=3, cpu_offload=False))\n"
        "D.init_process_group('cpu')\n"
        "profile = load_profile('demo', ['train.gradient_checkpointing=true'])\n"
        "plan = Plan(profile=profile, device='cpu', precision='fp32', gradient_checkpointing=True,"
        " tokenizer=None, train_rows=[], eval_rows=[], dataset_hash='x')\n"
        f"args = SFTConfig(**training_arguments(plan, RunDir(__import__('pathlib').Path({str(tmp_path)!r}))))\n"
        "print(json.dumps(dict(kw=args.gradient_checkpointing_kwargs, "
        "unused=args.ddp_find_unused_parameters, backend=args.ddp_backend, "
        "timeout=args.ddp_timeout, world=args.world_size)))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", WORLD_SIZE="1", RANK="0", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29000 + os.getpid() % 1000))
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"kw": {"use_reentrant": False}, "unused": False, "backend": "gloo",
                   "timeout": R.COLLECTIVE_TIMEOUT_S, "world": 1}


def test_zero_loss_on_a_rank_fails(monkeypatch):
    from workbench.train.plan import NonFiniteLoss

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(NonFiniteLoss, match="became 0.0 at step 7"):
        R.check_rank_loss(0.0, 7)
    R.check_rank_loss(0.5, 7)
    monkeypatch.setenv("WORLD_SIZE", "1")
    R.check_rank_loss(0.0, 7)  # one process: unchanged behaviour


def test_main_process_first_orders_rank_0_first(tmp_path):
    """Two real gloo processes: rank 1 enters the block only after rank 0 left it."""
    script = tmp_path / "order.py"
    script.write_text(
        "import os, time\n"
        "import torch.distributed as dist\n"
        "from workbench.train import ranks as D\n"
        "dist.init_process_group('gloo')\n"
        f"log = {str(tmp_path / 'order.log')!r}\n"
        "with D.main_process_first():\n"
        "    open(log, 'a').write(f'start {D.rank()}\\n')\n"
        "    time.sleep(1.0 if D.rank() == 0 else 0)\n"
        "    open(log, 'a').write(f'end {D.rank()}\\n')\n"
        "assert D.any_rank(D.rank() == 1) is True\n"
        "assert D.any_rank(False) is False\n"
        "dist.destroy_process_group()\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                           "--standalone", str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=180, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "order.log").read_text().split("\n")[:2] == ["start 0", "end 0"]


def test_adapter_check_refuses_an_empty_adapter(tmp_path):
    """What ZeRO-3 without gathering writes: the tensors, but empty."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    model = get_peft_model(
        LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     num_key_value_heads=2)),
        LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    good = tmp_path / "good"
    model.save_pretrained(str(good))
    R.check_adapter(good, model)
    from workbench.train.plan import RunError

    with pytest.raises(RunError, match="missing"):
        R.check_adapter(tmp_path / "nothing", model)
    empty = tmp_path / "empty"
    empty.mkdir()
    from peft import get_peft_model_state_dict

    keys = get_peft_model_state_dict(model)
    save_file({k: torch.empty(0) for k in keys}, str(empty / "adapter_model.safetensors"))
    with pytest.raises(RunError, match="wrong size"):
        R.check_adapter(empty, model)


# ---- world size on resume ------------------------------------------------------------------------

def test_grad_accum_keeps_the_global_batch():
    assert D.adjusted_grad_accum(4, 2, 2, 1)[0] == 4
    assert D.adjusted_grad_accum(4, 1, 4, 2)[0] == 2
    accum, note = D.adjusted_grad_accum(2, 8, 1, 4)
    assert accum == 2 and "8 -> 2 keeps the global batch of 16" in note
    assert D.adjusted_grad_accum(4, 4, 2, 2) == (4, "")
    with pytest.raises(D.DistributedError, match="cannot make it up exactly"):
        D.adjusted_grad_accum(4, 1, 2, 4)


# ---- the run folder seen from a rank ------------------------------------------------------------

def test_only_rank_0_writes_the_run_folder(tmp_path):
    from workbench.rundir import RunDir

    RunDir(tmp_path).write_status(state="running", pid=111)
    zero, one = D.RankRunDir(tmp_path, 0), D.RankRunDir(tmp_path, 1)
    one.write_status(step=5, pid=222)
    one.append_event("log", step=5, loss=1.0)
    assert RunDir(tmp_path).read_status().get("step") is None
    assert not (tmp_path / "events.jsonl").exists()
    zero.write_status(step=6, pid=333)
    zero.append_event("log", step=6, loss=1.0)
    status = RunDir(tmp_path).read_status()
    assert status["step"] == 6 and status["pid"] == 111  # the launcher's pid stays
    one.append_event("error", kind="nan", message="the training loss became nan at step 7")
    one.write_status(state="failed", message="boom")
    rec = D.read_ranks(RunDir(tmp_path))[1]
    assert rec["error_kind"] == "nan" and rec["state"] == "failed"
    assert RunDir(tmp_path).read_status()["state"] == "running"
    # Rank 0 failing leaves the verdict to the launcher (it may only have lost a peer).
    zero.write_status(state="failed", message="connection reset")
    assert RunDir(tmp_path).read_status()["state"] == "running"


def test_culprit_prefers_a_killed_rank_then_a_rank_that_failed_on_its_own():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    def failure(rank, code):
        return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="")

    ranks = {0: {"state": "failed", "error_kind": "crash", "error": "Connection reset by peer"},
             1: {"state": "running"}}
    r, msg = D._culprit({0: failure(0, 1), 1: failure(1, -9)}, ranks)
    assert r == 1 and "rank 1 was killed by SIGKILL (pid 1001)" in msg
    ranks = {0: {"state": "failed", "error_kind": "crash", "error": "Connection reset"},
             1: {"state": "failed", "error_kind": "nan", "error": "the training loss became nan"}}
    r, msg = D._culprit({0: failure(0, 1), 1: failure(1, 1)}, ranks)
    assert (r, msg) == (1, "rank 1: the training loss became nan")


# ---- command line ------------------------------------------------------------------------------

def test_run_flags_are_profile_overrides():
    from workbench.cli import build_parser

    args = build_parser().parse_args(["run", "demo", "--gpus", "0,3", "--procs", "2",
                                      "--node-rank", "1", "--set", "train.max_steps=2"])
    assert args.overrides == ['distributed.gpus="0,3"', "distributed.processes=2",
                              "distributed.node_rank=1", "train.max_steps=2"]  # as typed
    with pytest.raises(Exception, match="distributed.processes"):
        load_profile("demo", build_parser().parse_args(["run", "demo", "--procs", "0"]).overrides)


# ---- the Slurm script ------------------------------------------------------------------------

def test_slurm_script_line_by_line():
    p = load_profile("demo", ["distributed.master_port=29411"])
    text = slurm_script(p, "demo", ["train.max_steps=100"], nodes=2, gpus_per_node=8,
                        time_limit="02:00:00", partition="gpu", runs_dir="/shared/runs")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch == ["#SBATCH --job-name=workbench-demo", "#SBATCH --nodes=2",
                      "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                      "#SBATCH --time=02:00:00", "#SBATCH --output=%x-%j.out",
                      "#SBATCH --partition=gpu"]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands == [
        "set -euo pipefail",
        "RUN_DIR=$(python -m workbench.pipeline.launch prepare demo --set train.max_steps=100 "
        "--set distributed.nnodes=2 --set distributed.gpus=8 --runs-dir /shared/runs)",
        'echo "run folder: $RUN_DIR"',
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "MASTER_PORT=29411",
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c 'exec python -m "
        "workbench.pipeline.launch launch \"$0\" --node-rank \"$SLURM_NODEID\" --master-addr "
        "\"$1\" --master-port \"$2\"' \"$RUN_DIR\" \"$MASTER_ADDR\" \"$MASTER_PORT\"",
    ]
    # bash can parse it, and the srun line splits into the words srun will get.
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    words = shlex.split(commands[-1])
    assert words[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1", "bash"]
    assert words[-3:] == ["$RUN_DIR", "$MASTER_ADDR", "$MASTER_PORT"]
    assert "--partition" not in slurm_script(p, "demo", [], nodes=1, gpus_per_node=4)


def test_launch_script_command(tmp_path):
    out = workbench("launch-script", "demo", "--scheduler", "slurm", "--nodes", "2",
                    "--gpus-per-node", "4", "-o", "job.sbatch", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "sbatch job.sbatch" in out.stdout
    text = (tmp_path / "job.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=4" in text
    assert os.access(tmp_path / "job.sbatch", os.X_OK)
    bad = workbench("launch-script", "demo", "--set", "distributed.nnodes=0", cwd=tmp_path)
    assert bad.returncode == 2 and "distributed.nnodes" in bad.stderr and "Traceback" not in bad.stderr


def test_prepare_creates_the_run_folder_with_its_launch(tmp_path, needs_tiny_model):
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.pipeline.launch", "prepare", "demo", "--set",
         "distributed.processes=2", "--set", "distributed.nnodes=2", "--runs-dir",
         str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    status = json.loads((run_dir / "status.json").read_text())
    assert status["launch"]["nnodes"] == 2 and status["launch"]["nproc_per_node"] == 2
    assert status["world_size"] == 4 and status["state"] == "starting"
