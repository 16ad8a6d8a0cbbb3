"""TRL's preference trainers, handed the data room's token ids instead of text.

Each TRL trainer would otherwise apply the chat template and tokenize again, by its own rules
(DPO and KTO split prompt and answer where two tokenizations diverge; ORPO and CPO tokenize
prompt and answer apart and add BOS / EOS). Here the rows already hold `prompt_ids` and each
answer's ids as `workbench data show` renders them, so the trainers skip their preparation.
Heavy imports at top level: only preference.build_trainer imports this, lazily.
"""

from __future__ import annotations

import warnings

from trl import DPOTrainer, KTOTrainer

with warnings.catch_warnings():  # trl.experimental warns on import that its API may change
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer


class PretokenizedDPOTrainer(DPOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


class PretokenizedKTOTrainer(KTOTrainer):
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "completion_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset
        # As KTOTrainer does: the KL term's mismatched answers are each batch's answers
        # rotated by one (the rows are shuffled beforehand, so a neighbour is another prompt's).
        def rotate(batch):
            batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
            return batch

        return dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)


def _pair_features(feature: dict) -> dict:
    """The columns ORPO's and CPO's collator pads: prompt, and each side as prompt + answer
    with the prompt masked out of the labels."""
    prompt = list(feature["prompt_ids"])
    batch = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        answer = list(feature[f"{side}_ids"])
        batch[f"{side}_input_ids"] = prompt + answer
        batch[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
        batch[f"{side}_labels"] = [-100] * len(prompt) + answer
    return batch


class PretokenizedORPOTrainer(ORPOTrainer):
    def tokenize_row(self, feature, model=None) -> dict:
        return _pair_features(feature)


class PretokenizedCPOTrainer(CPOTrainer):
    def tokenize_row(self, feature, model=None) -> dict:
        return _pair_features(feature)


def orpo_config(**kwargs) -> ORPOConfig:
    return ORPOConfig(**kwargs, dataset_num_proc=None)


def cpo_config(**kwargs) -> CPOConfig:
    return CPOConfig(**kwargs, dataset_num_proc=None)
