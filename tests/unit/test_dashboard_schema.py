"""Every dashboard JSON type-checks against Grafana's own TypeScript schema (@grafana/schema 11.6, tsc --strict)."""

import shutil
import subprocess

import pytest

from agent.dashboards.render import OUTPUT

CHECK = OUTPUT.parent / "schema-check"


def test_dashboards_type_check_against_grafana_schema():
    tsc = CHECK / "node_modules" / ".bin" / "tsc"
    if not tsc.exists() or shutil.which("node") is None:
        pytest.fail("run ./scripts/install.sh --test (it installs grafana/schema-check's npm packages)")
    generated = CHECK / "generated"
    shutil.rmtree(generated, ignore_errors=True)
    generated.mkdir()
    dashboards = sorted(OUTPUT.glob("*/*.json"))
    for path in dashboards:
        (generated / f"{path.parent.name}-{path.stem}.ts").write_text(
            "import type { Dashboard } from '@grafana/schema';\n"
            f"const board: Dashboard = {path.read_text()};\nexport default board;\n")
    result = subprocess.run([str(tsc), "--noEmit", "--strict", "--moduleResolution", "node", "--target", "es2020",
                             *sorted(str(p) for p in generated.glob("*.ts"))],
                            cwd=CHECK, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(dashboards) == 10
