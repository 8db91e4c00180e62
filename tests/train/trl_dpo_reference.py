"""Run by TRL's own venv (tests/train/test_dpo.py): TRL's DPOTrainer loss and reward metrics on a saved batch."""

import json, sys, tempfile
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

policy_dir, ref_dir, batch_path, beta, eps, loss_type, out = sys.argv[1:]
tokenizer = AutoTokenizer.from_pretrained(policy_dir)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
reference = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
with tempfile.TemporaryDirectory() as tmp:
    args = DPOConfig(output_dir=tmp, beta=float(beta), label_smoothing=float(eps), loss_type=[loss_type],
                     report_to=[], use_cpu=True, per_device_train_batch_size=2,
                     bf16=False)  # fp32 throughout: its default autocasts the reference to bfloat16
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args,
                         train_dataset=Dataset.from_list([{"prompt": "a b", "chosen": " c", "rejected": " d"}]),
                         processing_class=tokenizer)
    batch = torch.load(batch_path)
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, batch, False)
    metrics = trainer._metrics["train"]
    json.dump({"loss": float(loss), **{k: metrics[k][-1] for k in ("rewards/chosen", "rewards/rejected", "rewards/margins",
                                                                  "rewards/accuracies", "logps/chosen", "logps/rejected")}},
              open(out, "w"))
