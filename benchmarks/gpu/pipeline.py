"""The GPU script's parts in order, each run through ``Outcome.part`` so that one that cannot
run, or fails, is reported and the next still runs (see run_all.py for the story)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.gpu import realistic_model
from benchmarks.gpu.adapter_logprobs import logprob_matrix, matrix_check
from benchmarks.gpu.outcome import Outcome, Skipped
from benchmarks.gpu.serving_common import Served, served_rows, target_make
from benchmarks.gpu.train_compare import compare, platform_train, qlora_unavailable

# The candidates' PolicyVersion-like ids: each adapter is a version of its own.
VERSIONS = {"lora": 101, "qlora": 102, "lora-terse": 103}
PAIRS = 400  # preference pairs per style (the synthetic task has 416 distinct questions)


class Pipeline:
    def __init__(
        self,
        outcome: Outcome,
        *,
        args: argparse.Namespace,
        size: dict[str, Any],
        facts: dict[str, Any],
        work: Path,
        model: Path,
    ) -> None:
        self.outcome, self.args, self.size, self.facts = outcome, args, size, facts
        self.work, self.model = work, model
        self.skips = {s.strip() for s in args.skip.split(",") if s.strip()}
        self.adapters: dict[str, tuple[Path, int]] = {}
        self.sampling = self._sampling(seed=0)

    def _part(self, name: str, run: Any, *, needs_s: float = 0) -> Any:
        """``Outcome.part``, with the GPU's time estimates (the smoke test has no budget)."""
        return self.outcome.part(name, run, needs_s=self.size["need"](needs_s))

    def _sampling(self, *, seed: int, tokens: int | None = None) -> Any:
        """Temperature 1 and no top-p cut: the served completions are samples of the model
        itself, which the log-probability check relies on."""
        from feedback.serving.backends import Sampling

        return Sampling(
            temperature=1.0,
            top_p=1.0,
            max_new_tokens=tokens or self.size["max_new_tokens"],
            seed=seed,
        )

    def _check_sampling(self) -> Any:
        """The hot-swap sets' sampling: another seed than the timed round's, shorter."""
        return self._sampling(seed=1, tokens=self.size["check_new_tokens"])

    # -- training ----------------------------------------------------------------------------

    def train(self) -> None:
        if not self.facts["training"]:
            self.outcome.skip("training", "trl, peft, datasets or accelerate is missing")
            return
        polite = realistic_model.snapshot_write(
            self.work / "snapshots" / "polite",
            realistic_model.preference_rows(PAIRS, style="polite", seed=5),
        )
        terse = realistic_model.snapshot_write(
            self.work / "snapshots" / "terse",
            realistic_model.preference_rows(PAIRS, style="terse", seed=6),
        )
        precision = "bf16" if self.facts["cuda"] else "fp32"
        self._candidate(
            "lora",
            f"train LoRA {precision} (polite)",
            snapshot=polite,
            quantization=None,
            needs_s=90,
        )
        reason = "skipped by --skip" if "qlora" in self.skips else qlora_unavailable()
        if reason:
            self.outcome.skip("train QLoRA 4-bit", reason)
        else:
            self._candidate(
                "qlora",
                "train QLoRA 4-bit (terse)",
                snapshot=terse,
                quantization="4bit",
                needs_s=100,
            )
        if "qlora" not in self.adapters:
            # The hot swap needs a second adapter (reusing the first's LoRA id is the bug it
            # catches): a LoRA one on the terse pairs, through the platform's trainer alone.
            trained = self._part(
                "train the second candidate: LoRA (terse)",
                lambda: platform_train(
                    self.model,
                    terse,
                    self.work / "train" / "lora-terse-platform",
                    self.size["plan"],
                ),
                needs_s=45,
            )
            if trained:
                self.adapters["lora-terse"] = (trained.adapter, VERSIONS["lora-terse"])

    def _candidate(
        self, name: str, part: str, *, snapshot: Path, quantization: str | None, needs_s: float
    ) -> None:
        trained = self._part(
            part,
            lambda: compare(
                self.outcome,
                label=name,
                model_dir=self.model,
                snapshot=snapshot,
                work=self.work / "train",
                plan=self.size["plan"],
                quantization=quantization,
                repeats=self.args.train_repeats,
            ),
            needs_s=needs_s,
        )
        if not trained:
            return
        side = "platform" if "platform" in trained else "bare"
        if side == "bare":
            self.outcome.say(
                f"{name}: the candidate is the bare TRL adapter (the platform could not train it)"
            )
        self.adapters[name] = (trained[side].adapter, VERSIONS[name])

    # -- serving -----------------------------------------------------------------------------

    def serve(self) -> None:
        prompts = realistic_model.prompts(self.size["check_prompts"], seed=11)
        if not self.facts["vllm"]:
            self.outcome.skip(
                "vllm: both serving shapes",
                "needs CUDA and vllm; the adapter "
                "check runs through the transformers backend instead",
            )
            sets = self._part(
                "transformers backend: hot swaps",
                lambda: self._transformers_swaps(prompts),
                needs_s=120,
            )
            self._whose("transformers backend", sets)
            return
        if "inprocess" not in self.skips:
            self._inprocess(prompts)
        else:
            self.outcome.skip("vllm in-process", "skipped by --skip")
        if "served" not in self.skips:
            self._served(prompts)
        else:
            self.outcome.skip("vllm serve", "skipped by --skip")

    def _whose(self, shape: str, sets: dict[str, list[Served]] | None) -> None:
        if not sets:
            return
        adapters = {name: path for name, (path, _) in self.adapters.items()}
        self._part(
            f"{shape}: whose completions",
            lambda: matrix_check(self.outcome, shape, logprob_matrix(self.model, adapters, sets)),
            needs_s=30,
        )

    def _transformers_swaps(self, prompts: list[Any]) -> dict[str, list[Served]]:
        from feedback.serving.backends import get_backend

        backend, k = get_backend("transformers"), self.args.k
        sampling, sets = self._check_sampling(), {}
        for name, (path, version) in {**self.adapters, "base": (None, None)}.items():
            target = target_make(
                str(self.model),
                adapter=str(path) if path else None,
                name=f"gpu-{name}-v{version}" if path else "",
                version_id=version,
            )
            if load := getattr(backend, "load", None):
                load(target)
            sets[name] = served_rows(
                prompts, backend.generate(target, prompts, n=k, sampling=sampling)
            )
            self.outcome.say(
                f"served {len(sets[name])} completions as {name}: {sets[name][0].text[:60]!r}"
            )
        return sets

    def _inprocess(self, prompts: list[Any]) -> None:
        from benchmarks.gpu.vllm_inprocess import InProcess

        def start() -> InProcess:
            started = InProcess(self.outcome, self.model)
            started.start()
            return started

        engine = self._part("vllm in-process: start", start, needs_s=150)
        if engine is None:
            return
        round_prompts = realistic_model.prompts(self.size["prompts"], seed=1)
        self._part(
            "vllm in-process: a round, platform vs LLM.chat alone",
            lambda: engine.throughput(
                round_prompts, k=self.args.k, sampling=self.sampling, repeats=self.args.repeats
            ),
            needs_s=40,
        )
        if "fullswap" in self.skips:
            self.outcome.skip("vllm in-process: full-weight swap", "skipped by --skip")
        else:
            self._part(
                "vllm in-process: full-weight swap",
                lambda: engine.full_swap(
                    realistic_model.model_copy(self.model, self.work / "model-copy")
                ),
                needs_s=100,
            )
        sets = self._part(
            "vllm in-process: hot swaps and rollback",
            lambda: engine.hot_swaps(
                self.adapters, prompts, k=self.args.k, sampling=self._check_sampling()
            ),
            needs_s=30,
        )
        self._part(
            "vllm in-process: unload the candidates", lambda: engine.adapters_unload(self.adapters)
        )
        self._part("vllm in-process: release", engine.release)
        self._whose("vllm in-process", sets)

    def _served(self, prompts: list[Any]) -> None:
        from benchmarks.gpu.vllm_served import Server

        try:
            server = Server(
                self.outcome,
                self.model,
                log=self.work / "vllm-serve.log",
                gpu_fraction=self.args.gpu_fraction,
                lora_rank=16,
            )
        except Skipped as reason:
            self.outcome.skip("vllm serve", str(reason))
            return
        try:
            started = self._part(
                "vllm serve: start",
                lambda: server.start(deadline_s=max(60.0, self.outcome.left())) or True,
                needs_s=150,
            )
            if started is None:
                return
            served_prompts = realistic_model.prompts(self.size["served_prompts"], seed=2)
            self._part(
                "vllm serve: a round, openai backend vs bare HTTP",
                lambda: server.throughput(
                    served_prompts, k=self.args.k, sampling=self.sampling, repeats=self.args.repeats
                ),
                needs_s=60,
            )
            few = prompts[: self.size["served_prompts"]]  # one HTTP request per sample
            sets = self._part(
                "vllm serve: hot swaps and rollback",
                lambda: server.hot_swaps(
                    self.adapters, few, k=self.args.k, sampling=self._check_sampling()
                ),
                needs_s=60,
            )
        finally:
            server.stop()
            self._log_keep(server.log)
        self._whose("vllm serve", sets)

    def _log_keep(self, log: Path) -> None:
        """The server's log beside the results, for a reader of a failed run."""
        import os
        import shutil

        if os.environ.get("OUT") and log.exists():
            shutil.copy(log, Path(os.environ["OUT"]) / log.name)
