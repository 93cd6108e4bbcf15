"""WCAG 2.1 AA of the profile views in JupyterLab, light and dark, checked by axe-core.

Three views on one page: two notebook widgets (the widget bundle) and the Lab panel
(the extension's own copy of the view code). axe checks every rule tagged WCAG 2.x A
and AA on them; the check is first shown able to fail on a deliberately unreadable
element. Also checked: ids are unique across the views and every reference stays in
its own view, focus goes back to the control that opened a dialog after save, discard,
revoke and consent, and a skip link moves focus past a long table.

JupyterLab's body is 0 px tall (the shell is positioned absolutely): axe's contrast
rule then finds nothing visible to check. The test gives the body the window's height.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .conftest import REPO, LabServer, start_lab
from .lab import SETUP, open_and_run

AXE = REPO / "labextension" / "node_modules" / "axe-core" / "axe.min.js"
NOTEBOOK = "a11y.ipynb"
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
PROBE = "lumen-axe-probe"

RUN_AXE = """async (probe) => {
  document.documentElement.style.height = '100%';
  document.body.style.height = window.innerHeight + 'px';
  const include = [...document.querySelectorAll('.lumen-profile, dialog.lumen-dialog')];
  const result = await axe.run(include, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    resultTypes: ['violations', 'passes']
  });
  const contrast = result.passes.find(r => r.id === 'color-contrast');
  return {
    violations: result.violations.map(v => ({
      id: v.id,
      nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary)
    })),
    contrastPasses: contrast ? contrast.nodes.length : 0
  };
}"""

ID_CHECK = """() => {
  const views = [...document.querySelectorAll('.lumen-profile')];
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const duplicates = ids.filter((id, i) => ids.indexOf(id) !== i && id.startsWith('lumen-'));
  const strays = [];
  for (const view of views) {
    const refs = [];
    for (const el of view.querySelectorAll('label[for]')) refs.push(el.getAttribute('for'));
    for (const attr of ['aria-labelledby', 'aria-describedby', 'aria-controls']) {
      for (const el of view.querySelectorAll('[' + attr + ']')) {
        refs.push(...el.getAttribute(attr).split(/\\s+/));
      }
    }
    for (const ref of refs) {
      const target = document.getElementById(ref);
      if (!target || !view.contains(target)) strays.push(ref);
    }
  }
  return { views: views.length, duplicates, strays };
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    if not AXE.exists():
        pytest.skip("axe-core is missing: cd labextension && jlpm install")
    # this checkout's Lab extension (the panel's code under test), not an installed one
    yield from start_lab(tmp_path_factory, checkout_frontend=True)


@pytest.fixture(scope="module")
def account(server: LabServer) -> LabServer:
    assert server.chat("demo-pro") == 200
    for name in ("laptop", "ci-runner"):
        server.api("POST", "keys", {"name": name})
    old = server.api("POST", "keys", {"name": "old-script"})
    server.api("DELETE", f"keys/{old['id']}")
    return server


def open_views(browser: Browser, server: LabServer, theme: str) -> tuple[Page, Locator]:
    server.set_theme(THEMES[theme])
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    server.write_notebook(
        NOTEBOOK,
        [
            SETUP
            + "source = RestSource.from_environment()\n"
            + "widgets.Profile(source, refresh_interval=0)",
            "widgets.KeysTable(source, refresh_interval=0)",
        ],
    )
    open_and_run(page, server, NOTEBOOK, expect_count=2)
    # The Lab panel: the extension's own copy of the view code.
    page.locator(".lumen-status-item").click()
    panel = page.locator(".lumen-panel .lumen-profile")
    expect(panel).to_be_visible(timeout=30_000)
    expect(panel).to_have_attribute("aria-busy", "false", timeout=30_000)
    page.add_script_tag(path=str(AXE))
    return page, panel


def check_visible_views(page: Page, where: str) -> None:
    """axe on the views on screen: first proven able to fail, then without a violation."""
    page.evaluate(
        """(probe) => {
          const p = document.createElement('p');
          p.className = probe;
          p.textContent = 'Hardly readable';
          p.style.cssText = 'color:#8a8a8a;background:#9a9a9a;font-size:13px';
          const shown = [...document.querySelectorAll('.lumen-profile')]
            .find(e => e.offsetParent !== null);
          shown.prepend(p);
        }""",
        PROBE,
    )
    probed = page.evaluate(RUN_AXE, PROBE)
    contrast = [v for v in probed["violations"] if v["id"] == "color-contrast"]
    assert contrast and any(PROBE in node for node in contrast[0]["nodes"]), (where, probed)
    page.evaluate(f"() => document.querySelector('.{PROBE}').remove()")
    result = page.evaluate(RUN_AXE, PROBE)
    assert result["violations"] == [], (where, result["violations"])
    # many texts were really checked, not skipped as invisible
    assert result["contrastPasses"] > 50, (where, result)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_violation(browser: Browser, account: LabServer, theme: str) -> None:
    page, _panel = open_views(browser, account, theme)
    try:
        light = page.evaluate("() => document.body.dataset.jpThemeLight")
        assert light == ("false" if theme == "dark" else "true")
        check_visible_views(page, "panel")
        page.locator(".lm-TabBar-tab", has_text=NOTEBOOK).first.click()
        expect(page.locator(".jp-OutputArea .lumen-profile").nth(1)).to_be_visible()
        check_visible_views(page, "notebook")
    finally:
        page.context.close()


def focused(page: Page) -> dict[str, Any]:
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
          const el = document.activeElement;
          return {
            tag: el.tagName.toLowerCase(),
            cls: el.className || '',
            text: (el.textContent || '').trim().slice(0, 60),
            section: el.closest('section')?.getAttribute('aria-label') ?? null,
            panel: !!el.closest('.lumen-panel')
          };
        }"""
    )


def test_ids_focus_and_skip_link(browser: Browser, account: LabServer) -> None:
    page, panel = open_views(browser, account, "light")
    try:
        ids = page.evaluate(ID_CHECK)
        assert ids["views"] == 3
        assert ids["duplicates"] == [] and ids["strays"] == [], ids

        # "Show deleted keys" of the panel toggles the panel's table, not a widget's.
        widget_keys = page.locator(".jp-OutputArea .lumen-keys-table").first
        before = widget_keys.locator("tbody tr").count()
        panel.get_by_text("Show deleted keys").click()
        expect(panel.locator(".lumen-keys-table tr.lumen-revoked")).to_have_count(1)
        assert widget_keys.locator("tbody tr").count() == before

        # Save: focus goes back to "+ New API Key" (disabled while the key was made).
        new_button = panel.locator(".lumen-new-key")
        new_button.focus()
        page.keyboard.press("Enter")
        dialog = page.locator("dialog.lumen-new-key-dialog[open]")
        expect(dialog).to_be_visible()
        dialog.locator(".lumen-key-name").fill("from-a11y")
        dialog.locator("button[name='save']").click()
        expect(dialog).to_have_count(0)
        expect(panel.locator("td[data-column='name']", has_text="from-a11y")).to_have_count(1)
        now = focused(page)
        assert now["panel"] and "lumen-new-key" in now["cls"], now

        # Discard: the same.
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        dialog.locator("button[name='discard']").click()
        expect(dialog).to_have_count(0)
        now = focused(page)
        assert now["panel"] and "lumen-new-key" in now["cls"], now

        # Revoke: the row re-renders without its button; focus goes to the section heading.
        row = panel.locator("tr", has=page.locator("td[data-column='name']", has_text="from-a11y"))
        row.get_by_role("button", name=re.compile("Revoke")).click()
        page.locator("dialog.lumen-confirm-dialog button[name='confirm']").click()
        expect(row).to_have_class(re.compile("lumen-revoked"))
        expect(page.locator("dialog[open]")).to_have_count(0)
        now = focused(page)
        assert now["panel"] and now["tag"] == "h3" and now["text"] == "API Keys", now

        # Consent: focus returns into the Model Access section of the panel.
        models = panel.locator(".lumen-models")
        models.get_by_role("button", name=re.compile("Need Consent")).first.click()
        page.locator("dialog.lumen-consent-dialog button[name='accept']").click()
        expect(page.locator("dialog[open]")).to_have_count(0)
        now = focused(page)
        assert now["panel"] and now["section"] == "Model Access", now

        # Skip link: one Tab from the section tools reaches it, Enter gets past the table.
        skip = panel.locator(".lumen-keys .lumen-skip-link")
        expect(skip).to_have_text(re.compile(r"Skip the table: Your API keys \(\d+ rows\)"))
        new_button.focus()
        page.keyboard.press("Tab")
        assert "lumen-skip-link" in focused(page)["cls"]
        page.keyboard.press("Enter")
        assert "lumen-table-end" in focused(page)["cls"]
        page.keyboard.press("Tab")
        after = page.evaluate(
            "() => !document.activeElement.closest('.lumen-keys .lumen-table-wrap')"
        )
        assert after, focused(page)
    finally:
        page.context.close()
