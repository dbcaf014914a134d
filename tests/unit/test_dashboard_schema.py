"""Every dashboard JSON type-checks against Grafana's own TypeScript schema (@grafana/schema 11.6, tsc --strict)."""

import shutil
import subprocess

import pytest

from agent.dashboards.render import OUTPUT

CHECK = OUTPUT.parent / "schema-check"
#: @grafana/schema types an annotation's target as a bare DataQuery and ships no Prometheus or InfluxDB
#: query types; these declare exactly the fields those plugins read (their annotation editors), so the
#: rest of every annotation is still checked against the schema.
PLUGIN_ANNOTATIONS = """\
import type { AnnotationQuery, Dashboard } from '@grafana/schema';
interface PrometheusAnnotation extends AnnotationQuery {
  target: { refId: string; expr: string; interval?: string };
  titleFormat?: string; tagKeys?: string; textFormat?: string; useValueForTime?: boolean;
}
interface InfluxQLAnnotation extends AnnotationQuery {
  query: string; titleColumn?: string; textColumn?: string; tagsColumn?: string; timeEndColumn?: string;
}
type Board = Omit<Dashboard, 'annotations'> & {
  annotations?: { list?: Array<AnnotationQuery | PrometheusAnnotation | InfluxQLAnnotation> };
};
"""


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
            PLUGIN_ANNOTATIONS + f"const board: Board = {path.read_text()};\nexport default board;\n")
    result = subprocess.run([str(tsc), "--noEmit", "--strict", "--moduleResolution", "node", "--target", "es2020",
                             *sorted(str(p) for p in generated.glob("*.ts"))],
                            cwd=CHECK, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(dashboards) == 12
