"""A Hugging Face ``Trainer`` script run by torchrun (or as a nubis job): a tiny BERT classifier built
from a config, so nothing is downloaded, trained on random token ids whose label is their sum's parity.
Under a launcher the Trainer reads LOCAL_RANK and WORLD_SIZE and trains with DDP over gloo. Its
``output_dir`` (a ``checkpoint-N/`` each epoch, then the final model) is ``$NUBIS_OUTPUT_DIR`` when it is
set, so it outlives the job, else ``./trainer-output``.

    HF_HUB_OFFLINE=1 torchrun --standalone --nproc_per_node=2 train.py --epochs 2
    nubis job submit --workers 2 --env HF_HUB_OFFLINE=1 -- python train.py --epochs 2
"""

import argparse
import os

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

VOCAB, LENGTH = 128, 16


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(VOCAB, (n, LENGTH), generator=generator)
        self.labels = self.ids.sum(dim=1) % 2

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2)
    training = TrainingArguments(
        output_dir=os.environ.get("NUBIS_OUTPUT_DIR", "trainer-output"), num_train_epochs=args.epochs,
        per_device_train_batch_size=16, learning_rate=1e-3, use_cpu=True, ddp_backend="gloo",
        ddp_find_unused_parameters=False,
        save_strategy="epoch", logging_steps=8, report_to="none", seed=0,
    )
    trainer = Trainer(model=BertForSequenceClassification(config), args=training,
                      train_dataset=RandomTokens(args.samples))
    trainer.train()
    trainer.save_model()


if __name__ == "__main__":
    main()
