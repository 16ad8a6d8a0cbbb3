"""LoRA variants (issue 25): lora.rslora, lora.init (PiSSA, OLoRA, ...), lora.train_embeddings
with train.embedding_learning_rate. The profile checks each key and the combinations that
cannot work; short runs of the bundled tiny model show each variant trains, and that a
PiSSA / OLoRA adapter saved by a run, loaded onto the ORIGINAL base model (as eval and export
load it), gives what the trained model gave; the estimate counts trained embeddings; the
Configure screen shows the keys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import REPO, TINY_MODEL, workbench

DEMO = REPO / "profiles" / "demo.toml"
QUICK = ["train.eval_steps=0", "eval.after_training=false", "train.logging_steps=1",
         "train.save_steps=100", "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1"]
PROMPT = [[1, 50, 60, 70, 80, 90, 100, 110]]  # token ids: any text of the tiny vocabulary


# ---- the profile -----------------------------------------------------------------------------


def _problems(overrides: list[str]) -> str:
    from workbench.profile import ProfileError, load_profile

    with pytest.raises(ProfileError) as caught:
        load_profile(DEMO, overrides)
    return str(caught.value)


@pytest.mark.parametrize("overrides", [
    ["lora.rslora=true"],
    ['lora.init="gaussian"'], ['lora.init="pissa"'], ['lora.init="pissa_niter_4"'],
    ['lora.init="olora"'], ['lora.init="pissa"', 'lora.method="dora"'],
    ['lora.init="loftq"', 'train.device="auto"'],
    ["lora.train_embeddings=true"],
    ["lora.train_embeddings=true", "train.embedding_learning_rate=5e-5"],
    ['lora.init="gaussian"', 'train.method="dpo"'],  # B starts at zero: the reference holds
])
def test_good_values_load(overrides):
    from workbench.profile import load_profile

    profile = load_profile(DEMO, overrides)
    for item in overrides:
        key, _, value = item.partition("=")
        assert str(profile.get(key)).lower() == str(json.loads(value)).lower()


@pytest.mark.parametrize("overrides, key, words", [
    (["lora.rslora=1"], "lora.rslora", "true or false"),
    (['lora.init="pisa"'], "lora.init", 'did you mean "pissa"'),
    (['lora.init="pissa_niter_0"'], "lora.init", "pissa_niter_4"),
    (['lora.init="pissa_niter_"'], "lora.init", "pissa_niter_N"),
    (['lora.init="pissa_niter_N"'], "lora.init", "N a whole number"),
    (["lora.init=true"], "lora.init", "(a boolean)"),
    (["lora.train_embeddings=\"yes\""], "lora.train_embeddings", "true or false"),
    (["train.embedding_learning_rate=-1e-4"], "train.embedding_learning_rate", ">= 0"),
    # Its own rate without trained embeddings means nothing.
    (["train.embedding_learning_rate=1e-4"], "train.embedding_learning_rate",
     "lora.train_embeddings = true"),
    (['lora.init="loftq"'], "lora.init", "CUDA GPU"),  # the demo trains on the CPU
    (['lora.init="loftq"', 'lora.method="qlora"', 'train.device="cuda"'], "lora.init",
     "full-precision base"),
    (['lora.init="pissa"', 'lora.method="qlora"', 'train.device="cuda"'], "lora.init",
     "4-bit base cannot hold"),
    (['lora.init="olora"', 'train.method="dpo"'], "lora.init", "reference"),
    (['lora.init="pissa_niter_2"', "distributed.gpus=2"], "lora.init", "several processes"),
    (['lora.init="pissa"', 'model.adapter="some-run"'], "lora.init", "fresh adapter"),
    (["lora.train_embeddings=true", 'model.adapter="some-run"'], "lora.train_embeddings",
     "fresh adapter"),
    (["lora.rslora=true", 'model.adapter="some-run"'], "lora.rslora", "fresh adapter"),
])
def test_bad_values_name_the_key(overrides, key, words):
    text = _problems(overrides)
    assert key in text and words in text, text


# ---- short runs of the tiny model ------------------------------------------------------------


def _run(tmp_path: Path, overrides: list[str], monkeypatch=None):
    """One short run through the real runner: (run, {"model": the model the evaluation after
    training gets, "trained": its logits just before the adapter was saved})."""
    from workbench.profile import load_profile
    from workbench.train import lora_setup
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run
    from workbench.train.runner import execute

    seen: dict = {}
    if monkeypatch is not None:  # record what the trained model says, then save for real
        real_save = lora_setup.save_adapter_files

        def save_and_record(model, folder):
            seen["trained"] = _logits(model)
            return real_save(model, folder)
        monkeypatch.setattr(lora_setup, "save_adapter_files", save_and_record)
    plan = plan_run(load_profile(DEMO, QUICK + overrides + [f'train.runs_dir="{tmp_path}"']))
    run = create_run(plan, tmp_path)
    def keep_model(model, *args) -> None:  # returns no message: nothing cut it short
        seen.setdefault("model", model)

    state = execute(run, plan, after_training=keep_model)
    assert state == "finished", run.read_status()
    return run, seen


def _logits(model):
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(PROMPT)).logits.float().clone()
    model.train(was_training)
    return out


def _original_base():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)


def _on_original_base(adapter_dir: Path):
    """The saved adapter as `workbench eval` and `export` load it: onto the base from disk."""
    from peft import PeftModel

    return PeftModel.from_pretrained(_original_base(), str(adapter_dir))


@pytest.mark.slow
def test_rslora_run_scales_by_the_square_root_of_r(tmp_path):
    import math

    run, seen = _run(tmp_path, ["lora.rslora=true", "lora.r=16", "lora.alpha=8"])
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["use_rslora"] is True
    layer = seen["model"].base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / math.sqrt(16))  # not 8 / 16


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ['lora.init="pissa"'],
    ['lora.init="olora"'],
    # The fast SVD, rsLoRA's scale, DoRA's magnitudes and trained (tied) embeddings together.
    ['lora.init="pissa_niter_2"', "lora.rslora=true", 'lora.method="dora"',
     "lora.train_embeddings=true"],
], ids=["pissa", "olora", "pissa_niter-rslora-dora-embeddings"])
def test_saved_adapter_on_the_original_base_gives_the_trained_outputs(tmp_path, monkeypatch,
                                                                        overrides):
    import torch

    run, seen = _run(tmp_path, overrides, monkeypatch)
    trained, model = seen["trained"], seen["model"]
    base = _logits(_original_base())
    # The start moved part of the base into the adapter: loading the adapter unconverted, or
    # not at all, would be far off.
    assert (trained - base).abs().max() > 0.5
    loaded = _logits(_on_original_base(run.adapter_dir))
    torch.testing.assert_close(loaded, trained, atol=1e-4, rtol=1e-4)
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 2 * 16  # a plain LoRA
    # What the evaluation after training sees: the converted adapter, and the true base
    # with the adapter switched off.
    torch.testing.assert_close(_logits(model), trained, atol=1e-4, rtol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model), base, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_a_resumed_pissa_run_ends_with_the_same_adapter(tmp_path):
    """Checkpoints hold the unconverted adapter; resume re-derives the same residual base (same
    seed, same SVD) under it, so the converted adapter at the end is the uninterrupted one."""
    from safetensors.torch import load_file

    from workbench.profile import load_profile
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run
    from workbench.train.runner import execute

    overrides = QUICK + ["train.save_steps=2", "train.max_steps=4", 'lora.init="pissa_niter_2"',
                         "lora.train_embeddings=true", "train.embedding_learning_rate=1e-4",
                         f'train.runs_dir="{tmp_path}"']
    run = create_run(plan_run(load_profile(DEMO, overrides)), tmp_path)
    assert execute(run, plan_run(load_profile(DEMO, overrides))) == "finished"
    whole = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert execute(run, plan_run(load_profile(DEMO, overrides)), resume=True,
                   from_checkpoint="checkpoint-2") == "finished"
    resumed = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert sorted(resumed) == sorted(whole)
    for key, value in whole.items():
        assert (resumed[key] - value).abs().max() < 1e-5, key


@pytest.mark.slow
def test_trained_embeddings_get_their_own_learning_rate(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from workbench.train import lora_setup

    groups: list[list[tuple[float, set[str]]]] = []
    real = lora_setup.create_optimizer

    def recording(trainer, create_default):
        optimizer = real(trainer, create_default)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        groups.append([(g["lr"], {names[id(p)] for p in g["params"]})
                       for g in optimizer.param_groups])
        return optimizer
    monkeypatch.setattr(lora_setup, "create_optimizer", recording)
    run, seen = _run(tmp_path, ["lora.train_embeddings=true", "train.embedding_learning_rate=3e-4",
                                "train.learning_rate=1e-3", "train.weight_decay=0.01"])
    (created,) = groups
    embedding_groups = [(lr, names) for lr, names in created if lr == pytest.approx(3e-4)]
    assert embedding_groups, created
    # Only the trained embedding copy (tied: one matrix for input and output) is in them.
    moved = set().union(*(names for _, names in embedding_groups))
    assert moved == {"base_model.model.model.embed_tokens.modules_to_save.default.weight"}
    others = [lr for lr, names in created if names and not names & moved]
    assert others and all(lr == pytest.approx(1e-3) for lr in others)

    # The embeddings really trained, and the output layer still uses the same (tied) matrix.
    saved = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    trained = saved["base_model.model.model.embed_tokens.weight"]
    original = _original_base().get_input_embeddings().weight.detach()
    assert (trained - original).abs().max() > 1e-4
    model = seen["model"]
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.testing.assert_close(_logits(_on_original_base(run.adapter_dir)), _logits(model),
                               atol=1e-5, rtol=1e-5)


# ---- the estimate --------------------------------------------------------------------------


def test_estimate_counts_trained_embeddings():
    from workbench.estimate.config import load_model_config
    from workbench.estimate.memory import EstimateSettings, estimate
    from workbench.estimate.params import architecture_from_config
    from workbench.profile import load_profile

    config, _ = load_model_config(str(TINY_MODEL), "main")
    arch = architecture_from_config(config)
    plain = estimate(config, EstimateSettings.from_profile(load_profile(DEMO)))
    trained = estimate(config, EstimateSettings.from_profile(
        load_profile(DEMO, ["lora.train_embeddings=true"])))
    # Tied: one vocab x hidden matrix (fp32 on the CPU: weights, gradient, two AdamW states).
    assert trained.trainable_params - plain.trainable_params == arch.vocab * arch.hidden
    grown = trained.breakdown["trainable params"] - plain.breakdown["trainable params"]
    assert grown == arch.vocab * arch.hidden * 4
    assert (trained.breakdown["optimizer states"] - plain.breakdown["optimizer states"]
            == 2 * grown)
    assert trained.peak_bytes > plain.peak_bytes
    # Untied (Llama-3-style): the output layer is a second matrix.
    untied = dict(config, tie_word_embeddings=False)
    a = estimate(untied, EstimateSettings.from_profile(load_profile(DEMO)))
    b = estimate(untied, EstimateSettings.from_profile(
        load_profile(DEMO, ["lora.train_embeddings=true"])))
    assert b.trainable_params - a.trainable_params == 2 * arch.vocab * arch.hidden


def test_workbench_estimate_changes_with_train_embeddings(tmp_path):
    text = DEMO.read_text().replace("../assets/", f"{REPO}/assets/")
    plain, trained = tmp_path / "plain.toml", tmp_path / "embeddings.toml"
    plain.write_text(text)
    trained.write_text(text.replace('[lora]\n', '[lora]\ntrain_embeddings = true\n'))
    out = {}
    for path in (plain, trained):
        proc = workbench("estimate", str(path), "--json", "--no-count-data", cwd=tmp_path,
                         check=True)
        out[path.stem] = json.loads(proc.stdout)
    assert out["embeddings"]["trainable_params"] > out["plain"]["trainable_params"]
    assert out["embeddings"]["peak_bytes"] > out["plain"]["peak_bytes"]
    assert out["embeddings"]["settings"]["train_embeddings"] is True


# ---- the Configure screen ------------------------------------------------------------------


def test_configure_shows_the_new_keys(monkeypatch, tmp_path):
    from app_helpers import wait_for
    from textual.app import App

    from screens.configure import ConfigureScreen
    from screens.widgets.configure_form import ProfileForm

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path / "user-profiles"))

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ConfigureScreen("demo", count_tokens=False, detected_gpu={
                "name": "NVIDIA A10G", "free": 22 * 1024 ** 3, "total": 24 * 1024 ** 3}))

    async def drive():
        app = Host()
        async with app.run_test(size=(120, 60)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen.view is not None)
            form = screen.query_one(ProfileForm)
            shown = {key: form.widget(key) for key in (
                "lora.rslora", "lora.init", "lora.train_embeddings",
                "train.embedding_learning_rate")}
            assert shown["lora.rslora"].value == "false"
            assert shown["lora.init"].value == "default"
            before = screen.view.estimate.trainable_params

            form.set_value("lora.train_embeddings", True)
            await pilot.pause()
            assert screen.view.estimate.trainable_params > before
            assert screen.view.estimate.settings.train_embeddings

            shown["lora.init"].value = "pissa_niter_0"
            await pilot.pause()
            assert "pissa_niter_4" in screen.issues["lora.init"]  # what to write instead
            assert form.query_one("#f-lora-init-error").has_class("-shown")  # under the field
            shown["lora.init"].value = "pissa_niter_4"
            shown["train.embedding_learning_rate"].value = "5e-5"
            await pilot.pause()
            assert not screen.issues
            values = form.values()
            assert values["lora.init"] == "pissa_niter_4"
            assert values["train.embedding_learning_rate"] == 5e-5
            assert values["lora.train_embeddings"] is True

    asyncio.run(drive())
