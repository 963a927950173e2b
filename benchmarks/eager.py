"""Eager-mode latency: float vs fxquant vs upstream (torch.ao.quantization), single-threaded.

    PYTHONPATH=src python benchmarks/eager.py [--repeats 30]

Models (all on real data):
* a conv-bn-relu CNN trained on scikit-learn's digits, static PTQ (x86 qconfig), batch of 256;
* all-MiniLM-L6-v2 on 8-sentence batches of real sentences, dynamic quantization with
  upstream's default qconfig (both libraries) and with fxquant's per-token qconfig;
* an LSTM reading the digits row by row, dynamic quantization, batch of 256 sequences.

Prints median latencies, the speed-up over float, and an accuracy figure per model.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant.eager as fe
from fxquant.qconfig import get_default_qconfig
from fxquant.qconfig.per_token import per_token_dynamic_qconfig

warnings.filterwarnings("ignore")


def median_ms(fns: list[Callable[[], Any]], repeats: int, warmup: int = 2) -> list[float]:
    """Median latency of each function, measured round-robin so that load from other
    processes hits all of them alike. In each round every function first runs once untimed:
    the call right after another model's pays for refilling the caches."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(repeats):
            for fn, fn_times in zip(fns, times, strict=True):
                fn()
                start = time.perf_counter()
                fn()
                fn_times.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def sqnr_db(reference: torch.Tensor, out: torch.Tensor) -> float:
    noise = (reference - out).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def report(title: str, rows: list[tuple[str, float, str]]) -> None:
    print(f"\n{title}")
    float_ms = rows[0][1]
    print(f"  {'model':<28}{'median ms':>11}{'vs float':>10}   quality")
    for name, ms, quality in rows:
        print(f"  {name:<28}{ms:>11.2f}{float_ms / ms:>9.2f}x   {quality}")


# --- digits --------------------------------------------------------------------------------


def load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images, labels, order[:1200], order[1200:]


class DigitsCNN(nn.Module):
    def __init__(self, ns: Any) -> None:
        super().__init__()
        self.quant = ns.QuantStub()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()
        self.pool, self.flatten, self.fc = nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64 * 16, 10)
        self.dequant = ns.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.quant(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.dequant(self.fc(self.flatten(self.pool(x))))


class DigitsLSTM(nn.Module):
    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def train(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, train_idx: torch.Tensor,
          epochs: int, lr: float) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> str:
    with torch.no_grad():
        return f"accuracy {float((model(inputs).argmax(1) == labels).float().mean()):.4f}"


def static_ptq(model: nn.Module, ns: Any, qconfig: Any, calibration: torch.Tensor) -> nn.Module:
    groups = [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]]
    fused = ns.fuse_modules(copy.deepcopy(model).eval(), groups)
    fused.qconfig = qconfig
    prepared = ns.prepare(fused)
    with torch.no_grad():
        prepared(calibration)
    return ns.convert(prepared)


def bench_digits_cnn(repeats: int) -> None:
    images, labels, train_idx, test_idx = load_digits()
    torch.manual_seed(0)
    ours_float = train(DigitsCNN(fe), images, labels, train_idx, epochs=6, lr=3e-3)
    theirs_float = DigitsCNN(tq)
    theirs_float.load_state_dict(ours_float.state_dict())
    calibration = images[train_idx[:256]]
    ours = static_ptq(ours_float, fe, get_default_qconfig("x86"), calibration)
    theirs = static_ptq(theirs_float.eval(), tq, tq.get_default_qconfig("x86"), calibration)
    x = images[test_idx[:256]]
    test_x, test_y = images[test_idx], labels[test_idx]
    models = {"float": ours_float, "fxquant static int8": ours, "upstream static int8": theirs}
    times = median_ms([lambda m=m: m(x) for m in models.values()], repeats)
    report("digits CNN, static PTQ (x86 qconfig), batch 256", [
        (name, ms, accuracy(m, test_x, test_y))
        for (name, m), ms in zip(models.items(), times, strict=True)
    ])


def bench_digits_lstm(repeats: int) -> None:
    images, labels, train_idx, test_idx = load_digits()
    rows = images.squeeze(1)
    torch.manual_seed(0)
    model = train(DigitsLSTM(), rows, labels, train_idx, epochs=8, lr=5e-3)
    models = {
        "float": model,
        "fxquant dynamic int8": fe.quantize_dynamic(model, {nn.LSTM, nn.Linear}),
        "upstream dynamic int8": tq.quantize_dynamic(model, {nn.LSTM, nn.Linear}),
    }
    x = rows[test_idx[:256]]
    test_x, test_y = rows[test_idx], labels[test_idx]
    times = median_ms([lambda m=m: m(x) for m in models.values()], repeats)
    report("digits LSTM (8 steps x 8 pixels, hidden 128), dynamic int8, batch 256", [
        (name, ms, accuracy(m, test_x, test_y))
        for (name, m), ms in zip(models.items(), times, strict=True)
    ])


class TokenLSTM(nn.Module):
    """A 2-layer LSTM (384 -> 512) over token embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(384, 512, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def bench_token_lstm(repeats: int) -> None:
    from fxquant.zoo.minilm import minilm_l6, minilm_tokenizer
    from fxquant.zoo.sentences import real_sentences

    ids, _ = minilm_tokenizer().encode(real_sentences(8, split="holdout"))
    with torch.no_grad():
        x = minilm_l6().encoder.embeddings.word_embeddings(ids)  # real token sequences
    torch.manual_seed(0)
    model = TokenLSTM().eval()
    models = {
        "float": model,
        "fxquant dynamic int8": fe.quantize_dynamic(model, {nn.LSTM}),
        "upstream dynamic int8": tq.quantize_dynamic(model, {nn.LSTM}),
    }
    times = median_ms([lambda m=m: m(x) for m in models.values()], repeats)
    with torch.no_grad():
        reference = model(x)
        quality = [sqnr_db(reference, m(x)) for m in models.values()]
    report(f"LSTM 2x512 over MiniLM word embeddings of 8 real sentences {tuple(x.shape)}, "
           "dynamic int8", [
        (name, ms, "reference" if m is model else f"SQNR to float {q:.1f} dB")
        for (name, m), ms, q in zip(models.items(), times, quality, strict=True)
    ])


# --- MiniLM --------------------------------------------------------------------------------


def bench_minilm(repeats: int) -> None:
    from fxquant.zoo.minilm import minilm_l6, minilm_tokenizer
    from fxquant.zoo.sentences import real_sentences

    model = minilm_l6()
    tokenizer = minilm_tokenizer()
    sentences = real_sentences(64, split="holdout")
    batches = [tokenizer.encode(sentences[i:i + 8]) for i in range(0, len(sentences), 8)]

    def run_all(m: nn.Module) -> torch.Tensor:
        return torch.cat([m(ids, mask) for ids, mask in batches])

    with torch.no_grad():
        reference = run_all(model)

    def quality(m: nn.Module) -> str:
        with torch.no_grad():
            cosine = nn.functional.cosine_similarity(run_all(m), reference, dim=1).mean()
        return f"mean cosine to float {float(cosine):.4f}"

    variants = [
        ("float", model),
        ("upstream dynamic (default)", tq.quantize_dynamic(model)),
        ("fxquant dynamic (default)", fe.quantize_dynamic(model)),
        ("fxquant per-token dynamic",
         fe.quantize_dynamic(model, {nn.Linear: per_token_dynamic_qconfig})),
    ]
    per_round = max(3, repeats // (2 * len(batches)))
    times = median_ms([lambda m=m: run_all(m) for _, m in variants], per_round, warmup=1)
    rows = [
        (name, ms / len(batches), "reference" if m is model else quality(m))
        for (name, m), ms in zip(variants, times, strict=True)
    ]
    report(f"MiniLM-L6, 8-sentence batches of real sentences ({len(batches)} batches, "
           "ms per batch)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, engine {torch.backends.quantized.engine}, 1 thread")
    bench_digits_cnn(args.repeats)
    bench_minilm(args.repeats)
    bench_digits_lstm(args.repeats)
    bench_token_lstm(args.repeats)


if __name__ == "__main__":
    main()
