"""Applying a recommendation: the cmd rewrite (table-driven) and the config write (comments
and other tables kept byte for byte, atomic, 0600; broken or unwritable files untouched)."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from muxtui.engine.config import Config, load_config
from muxtui.engine.core import Engine
from muxtui.engine.errors import ConfigError, LocalServerError, UnknownModelError
from muxtui.engine.fit.apply import NotLlamaServerError, replace_flags, write_flags
from muxtui.engine.fit.flags import params_from_argv
from muxtui.engine.local.gemma import BUNDLED_GEMMA_NAME
from muxtui.engine.local.models import DEFAULT_LLAMA_CMD
from muxtui.engine.paths import Paths
from tests.conftest import muxtui_env, permission_bits_enforced
from tests.fit_shapes import write_shape
from tests.llama_support import assembled_gemma, place_bundled_gemma

FLAGS = ("-c", "8192", "-np", "2", "--kv-unified", "-ngl", "0", "--cache-ram", "256")
NEW = "-c 8192 -np 2 --kv-unified -ngl 0 --cache-ram 256"

REWRITES = [
    pytest.param(
        DEFAULT_LLAMA_CMD,
        "{llama} -m {path} --host {host} --port {port} " + NEW,
        id="default command",
    ),
    pytest.param(
        "llama-server -m {path} --port {port} --ctx-size=4096 --n-gpu-layers 99 --parallel 4 "
        "--cache-type-k q8_0 --cache-type-v q8_0 --cache-ram 8192 --ctx-checkpoints 32",
        "llama-server -m {path} --port {port} " + NEW,
        id="long spellings and = form",
    ),
    pytest.param(
        "llama-server -m {path} --port {port} -ngl 99 -c 512 -np 8 -ctk q4_0 -ctv q4_0 "
        "-cram -1 -ctxcp 4 -kvu",
        "llama-server -m {path} --port {port} " + NEW,
        id="short spellings",
    ),
    pytest.param(
        "llama-server -m {path} --port {port} --no-kv-unified --swa-full --gpu-layers all",
        "llama-server -m {path} --port {port} " + NEW,
        id="contradicting switches",
    ),
    pytest.param(
        "llama-server -m '/models/my model.gguf' --port {port} "
        '--chat-template "{% if x %}a b{% endif %}" -c 2048 --jinja',
        "llama-server -m '/models/my model.gguf' --port {port} "
        '--chat-template "{% if x %}a b{% endif %}" --jinja ' + NEW,
        id="other words keep their quoting",
    ),
    pytest.param(
        "taskset -c 0-3 env GGML_X=1 /opt/llama.cpp/bin/llama-server --port {port} -c 4096",
        "taskset -c 0-3 env GGML_X=1 /opt/llama.cpp/bin/llama-server --port {port} " + NEW,
        id="words before llama-server are not its flags",
    ),
    pytest.param(
        "llama-server --port {port} -m {path} -c",
        "llama-server --port {port} -m {path} " + NEW,
        id="a flag without its value",
    ),
]


@pytest.mark.parametrize(("before", "after"), REWRITES)
def test_replace_flags(before: str, after: str) -> None:
    assert replace_flags(before, FLAGS) == after
    assert replace_flags(after, FLAGS) == after  # applying twice changes nothing
    assert params_from_argv(shlex.split(after)) == params_from_argv(list(FLAGS))


def test_replace_flags_drops_a_kv_type_the_recommendation_leaves_at_f16() -> None:
    cmd = replace_flags("llama-server --port {port} -ctk q8_0 -ctv q8_0 -c 1", ("-c", "512"))
    assert cmd == "llama-server --port {port} -c 512"


def test_replace_flags_quotes_what_needs_it() -> None:
    assert replace_flags("{llama} --port {port}", ("--alias", "my model")) == (
        "{llama} --port {port} --alias 'my model'"
    )


@pytest.mark.parametrize(
    ("cmd", "error"),
    [
        ("python server.py --port {port} -c 4", NotLlamaServerError),
        ("mlx_lm.server --model {path} --port {port}", NotLlamaServerError),
        ("llama-server -m 'unclosed --port {port}", ValueError),
    ],
)
def test_replace_flags_refuses(cmd: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        replace_flags(cmd, FLAGS)


CONFIG = """\
# my muxtui setup
[providers.box]   # the GPU box
kind = "openai"
base_url = "http://10.0.0.5:8080/v1"  # keep this

[local.qwen]
# the one I use most
cmd = 'llama-server -m {path} --port {port} -c 4096 -ngl 99 --jinja'  # tuned by hand
path = "/models/qwen.gguf"
ttl = 600

[local."llama-3.1-8b"]
path = "/models/llama.gguf"

[cache]
max_models = 2    # two at once
"""


def test_an_entry_s_cmd_is_rewritten_and_nothing_else_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    path.chmod(0o644)
    applied, written = write_flags(path, "qwen", FLAGS, default_cmd=DEFAULT_LLAMA_CMD)
    expected_cmd = f"llama-server -m {{path}} --port {{port}} --jinja {NEW}"
    assert applied.cmd == expected_cmd and not applied.created
    assert path.read_text(encoding="utf-8") == CONFIG.replace(
        "'llama-server -m {path} --port {port} -c 4096 -ngl 99 --jinja'", f"'{expected_cmd}'"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert written.local["qwen"].cmd == expected_cmd
    assert load_config(path).local["qwen"].ttl == 600


def test_an_entry_without_cmd_gets_the_default_command(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    applied, _ = write_flags(path, "llama-3.1-8b", FLAGS, default_cmd=DEFAULT_LLAMA_CMD)
    expected_cmd = "{llama} -m {path} --host {host} --port {port} " + NEW
    assert applied.cmd == expected_cmd and not applied.created
    text = path.read_text(encoding="utf-8")
    assert text == CONFIG.replace(
        'path = "/models/llama.gguf"\n', f'path = "/models/llama.gguf"\ncmd = "{expected_cmd}"\n'
    )


def test_a_found_model_gets_a_new_entry_after_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    applied, written = write_flags(
        path, "phi-3.5", FLAGS, default_cmd=DEFAULT_LLAMA_CMD, model_path="/m/phi 3.5.gguf"
    )
    assert applied.created
    text = path.read_text(encoding="utf-8")
    assert text == (
        f'{CONFIG}\n[local."phi-3.5"]\npath = "/m/phi 3.5.gguf"\n'
        f'cmd = "{{llama}} -m {{path}} --host {{host}} --port {{port}} {NEW}"\n'
    )
    assert written.local["phi-3.5"].path == "/m/phi 3.5.gguf"


def test_no_config_file_yet_makes_one_in_a_private_folder(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "config.toml"
    write_flags(path, "m", FLAGS, default_cmd=DEFAULT_LLAMA_CMD, model_path="/m.gguf")
    assert load_config(path).local["m"].path == "/m.gguf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_inline_local_table_gets_the_entry_inside_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('local = { a = { path = "/a.gguf" } }\n', encoding="utf-8")
    write_flags(path, "b", FLAGS, default_cmd=DEFAULT_LLAMA_CMD, model_path="/b.gguf")
    assert set(load_config(path).local) == {"a", "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[local.qwen\ncmd = 1\n",
            "not saved, the file is not valid TOML",
        ),
        (
            "local = 3\n",
            "not saved, `local` is not a table; make it [local.NAME] tables",
        ),
        (
            "[local.qwen]\ncmd = 'python serve.py --port {port}'\n",
            "not saved, [local.qwen].cmd does not start llama-server; set its memory flags by hand",
        ),
    ],
    ids=["broken TOML", "local not a table", "not llama-server"],
)
def test_a_file_that_cannot_take_the_flags_is_left_untouched(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        write_flags(path, "qwen", FLAGS, default_cmd=DEFAULT_LLAMA_CMD, model_path="/q.gguf")
    error = str(caught.value)
    assert "\n" not in error and error.startswith(f"config error: {path}: ")
    assert message in error
    assert path.read_text(encoding="utf-8") == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_an_unwritable_folder_is_one_line_and_the_file_stays(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "config.toml"
    path.write_text(CONFIG, encoding="utf-8")
    folder.chmod(0o500)
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from muxtui.engine.errors import ConfigError\n"
        "from muxtui.engine.fit.apply import write_flags\n"
        "try:\n"
        "    write_flags(Path(sys.argv[1]), 'qwen', ['-c', '512'], default_cmd='')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    try:
        done = subprocess.run(
            [*permission_bits_enforced(), sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            env=muxtui_env(),
            timeout=60,
            check=False,
        )
    finally:
        folder.chmod(0o700)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"config error: {path}: not saved (Permission denied); make the file and its folder "
        "readable and writable, or point --config at another file\n"
    )
    assert path.read_text(encoding="utf-8") == CONFIG
    assert [p.name for p in folder.iterdir()] == ["config.toml"]


# --- through the engine ------------------------------------------------------------------------


async def test_engine_applies_to_a_model_found_in_a_folder(paths: Paths, tmp_path: Path) -> None:
    (Path.home() / "models").mkdir()
    model = write_shape("hybrid", Path.home() / "models" / "hybrid.gguf", scale=4)
    paths.config_file.parent.mkdir(parents=True)
    paths.config_file.write_text("[cache]\nmax_models = 1  # one\n", encoding="utf-8")
    config = load_config(paths.config_file)
    async with Engine(config, paths, discover=False) as engine:
        report = await engine.fit_report()
        fitted = next(m for m in report.models if m.name == "hybrid")
        assert fitted.recommendation is not None
        flags = fitted.recommendation.flags
        applied = await engine.apply_recommendation("hybrid", flags)
        assert applied.created and applied.config_file == paths.config_file
        # The engine's own config and its local servers use the new entry at once.
        assert config.local["hybrid"].cmd == applied.cmd
        spec = next(s for s in engine.servers.discovery.models if s.name == "hybrid")  # type: ignore[union-attr]
        assert spec.source == "config" and spec.cmd == applied.cmd
        again = await engine.fit_report()
        hybrid = next(m for m in again.models if m.name == "hybrid")
        assert hybrid.configured is not None
        wanted = fitted.recommendation.estimate
        assert hybrid.configured.params.ctx == wanted.params.ctx
        assert hybrid.configured.params.cache_ram_mib == wanted.params.cache_ram_mib
        assert hybrid.configured.total == wanted.total
    text = paths.config_file.read_text(encoding="utf-8")
    assert text.startswith("[cache]\nmax_models = 1  # one\n\n[local.hybrid]\n")
    reloaded = load_config(paths.config_file).local["hybrid"]
    assert reloaded.path == str(model)
    assert reloaded.cmd == DEFAULT_LLAMA_CMD.replace("-c 4096", " ".join(flags))


async def test_engine_refuses_an_unknown_model(paths: Paths) -> None:
    async with Engine(Config(), paths, discover=False) as engine:
        with pytest.raises(UnknownModelError):
            await engine.apply_recommendation("nothing-here", FLAGS)
    assert not paths.config_file.exists()


async def test_engine_applies_to_the_bundled_gemma_once_its_file_is_there(
    paths: Paths, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gemma = assembled_gemma(tmp_path_factory)
    async with Engine(Config(), paths, discover=False) as engine:
        with pytest.raises(LocalServerError) as caught:
            await engine.apply_recommendation(BUNDLED_GEMMA_NAME, ("-c", "1024"))
        assert "start it once" in str(caught.value) and "\n" not in str(caught.value)
        assert not paths.config_file.exists()

        placed = place_bundled_gemma(gemma, paths)
        applied = await engine.apply_recommendation(BUNDLED_GEMMA_NAME, ("-c", "1024"))
        assert applied.created
        entry = load_config(paths.config_file).local[BUNDLED_GEMMA_NAME]
        assert entry.path == str(placed)
        assert entry.cmd.endswith("--chat-template gemma -c 1024")  # its template flags kept
        spec = next(s for s in engine.servers.discovery.models if s.name == BUNDLED_GEMMA_NAME)  # type: ignore[union-attr]
        assert spec.source == "config" and not spec.bundled_model
