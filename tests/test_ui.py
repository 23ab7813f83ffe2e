"""The web UI in a real browser (playwright driving Debian's chromium, /usr/bin/chromium) on a tiny model
served on loopback: generate cards with the badge, feedback and arena votes landing in the database,
the dashboard's plots, a stored XSS payload shown as text, empty states, admin parts hidden without a
token. Screenshots of each tab go to tests/artifacts/ui/."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import LiveServer, quick, shared
from tweetforge.data.ingest import ingest
from tweetforge.data.snapshots import SnapshotRequest, create_snapshot
from tweetforge.data.sources import ReadOptions, open_source
from tweetforge.db.engine import engine_for
from tweetforge.db.schema import feedback, generations
from tweetforge.experiments.ab import create_experiment
from tweetforge.registry.versions import register, set_alias
from tweetforge.training.train import train

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "ui"
XSS_POSTS = [
    "<script>window.__xss = 1; alert('script ran')</script> Big rally tonight!",
    "Great crowd <img src=x onerror=\"window.__xss = 2; alert('img ran')\"> in Ohio today!",
]
XSS_PROMPT = "<img src=y onerror=\"window.__xss = 3\"> The"

if not Path(CHROMIUM).exists():
    pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run and `make test` do)",
                pytrace=False)


def app_for(home: Path, engine, models: list[str], admin_token: str | None):  # type: ignore[no-untyped-def]
    from tweetforge.config import get_settings
    from tweetforge.serving.service import Service, ServiceSettings

    os.environ["TWEETFORGE_HOME"] = str(home)
    get_settings.cache_clear()
    service = Service(engine, ServiceSettings(models=models))
    service.load()
    return served_with_ui(service, admin_token), service


def served_with_ui(service, admin_token: str | None):  # type: ignore[no-untyped-def]
    """The app `tweetforge serve` runs: the API with the web UI mounted at /."""
    from tweetforge.serving.app import create_app
    from tweetforge.ui.app import mount_ui

    return mount_ui(create_app(service, admin_token=admin_token), service, admin_token=admin_token)


@pytest.fixture(scope="module")
def live(tiny_gpt2, tmp_path_factory):
    """Trump's archive plus two posts carrying XSS payloads (the newest posts, so the dashboard lists them),
    two tiny versions, an evaluation, and an arena experiment between the versions."""
    from tweetforge.evaluation.evaluate import EvalSettings, run_evaluations

    home = tmp_path_factory.mktemp("ui-home")
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    ingest(engine, open_source(str(shared("trump_archive.csv")), None, ReadOptions(author="realDonaldTrump")))
    payloads = home / "payloads.csv"
    with payloads.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "isRetweet", "isDeleted", "device", "favorites", "retweets", "date"])
        for i, text in enumerate(XSS_POSTS):
            writer.writerow([9_000_000_000_000_000_000 + i, text, "f", "f", "Twitter for iPhone", 1, 1, f"2030-01-0{i + 1} 12:00:00"])
    ingest(engine, open_source(str(payloads), None, ReadOptions(author="realDonaldTrump")))
    snapshot = create_snapshot(engine, home / "datasets", SnapshotRequest("ui-v1", ("realDonaldTrump",)))
    config = quick(tiny_gpt2, dataset="ui-v1", max_steps=10, eval_every=5, checkpoint_every=5, name="tiny-ui")
    versions = [register(engine, home / "models", train(config, snapshot, home), snapshot) for _ in range(2)]
    run_evaluations(engine, home, [versions[0].ref, "markov"], None, EvalSettings(samples=16, seed=3, max_test_posts=80), report_to="none")
    set_alias(engine, versions[0].ref, "champion")  # the evaluated one: the dashboard opens on the champion
    create_experiment(engine, "tiny-arena", [("first", versions[0].ref, 50), ("second", versions[1].ref, 50)], metric="arena")
    app, service = app_for(home, engine, [v.ref for v in versions], admin_token=None)
    with LiveServer(app) as server:
        yield server, engine, service
    for loaded in service.loaded():
        loaded.batcher.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))  # type: ignore[attr-defined]
    yield page
    context.close()


def printable(text: str) -> str:
    """What a textarea shows the same way: an untrained model writes control characters, which browsers normalize."""
    return "".join(c for c in text if c.isprintable() and not c.isspace())


def open_ui(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url, wait_until="load")  # Gradio keeps a connection polling: never "networkidle"
    page.wait_for_selector("#generate-button", timeout=30_000)


def tab(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name=name).click()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_generate_shows_n_marked_cards_and_a_like_becomes_feedback(live, page):
    from playwright.sync_api import expect

    server, engine, _ = live
    open_ui(page, server.url)
    page.locator("#prompt textarea").fill(XSS_PROMPT)
    expect(page.locator("#generate-button")).to_be_enabled(timeout=30_000)  # once the page has listed the models
    page.locator("#generate-button").click()
    expect(page.locator(".generated-badge")).to_have_count(3, timeout=60_000)  # the default n is 3
    cards = page.locator(".post-text textarea")
    values = [cards.nth(i).input_value() for i in range(3)]
    assert all(v.startswith(XSS_PROMPT) for v in values)  # the prompt begins each post, as text
    page.locator(".like-button").first.click()
    expect(page.locator("#generate-outcome")).to_contain_text("recorded for post 1", timeout=30_000)
    shot(page, "generate")
    with engine.connect() as conn:
        rows = conn.execute(select(feedback.c.event, generations.c.prompt).join(generations, generations.c.id == feedback.c.generation_id)).all()
    assert [tuple(r) for r in rows] == [("like", XSS_PROMPT)]
    assert page.evaluate("window.__xss") is None and page.dialogs == []


def test_an_arena_vote_becomes_a_choice_and_reveals_the_variants(live, page):
    from playwright.sync_api import expect

    server, engine, _ = live
    open_ui(page, server.url)
    tab(page, "Arena")
    expect(page.locator("#arena-show")).to_be_enabled(timeout=30_000)
    page.locator("#arena-show").click()
    expect(page.locator("#vote-a")).to_be_enabled(timeout=60_000)
    shown_b = page.locator("#post-b textarea").input_value()
    page.locator("#vote-b").click()
    expect(page.locator("#arena-reveal")).to_contain_text("Vote recorded (B is better)", timeout=30_000)
    reveal = page.locator("#arena-reveal").inner_text()
    assert "first" in reveal and "second" in reveal and "tiny-ui:1" in reveal and "tiny-ui:2" in reveal
    shot(page, "arena")
    with engine.connect() as conn:
        vote = conn.execute(select(feedback.c.event, feedback.c.winner_id).where(feedback.c.event == "choice")).one()
        winner = conn.execute(select(generations.c.posts, generations.c.pair_id).where(generations.c.id == vote.winner_id)).one()
    assert winner.pair_id is not None and printable(winner.posts[0]["text"]) == printable(shown_b)


def test_the_dashboard_shows_its_plots_and_stored_posts_as_text(live, page):
    from playwright.sync_api import expect

    server, _, _ = live
    open_ui(page, server.url)
    tab(page, "Dashboard")
    for plot in ("#data-plot", "#training-plot", "#evaluation-plot", "#experiment-plot"):
        image = page.locator(f"{plot} img")
        expect(image).to_be_visible(timeout=60_000)
        image.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=30_000)
        assert image.evaluate("img => img.naturalWidth * img.naturalHeight") > 100 * 100, plot
    expect(page.locator("#data-table")).to_contain_text("@realDonaldTrump")
    expect(page.locator("#experiment-state")).to_contain_text("tiny-arena")
    recent = page.locator("#recent-posts")
    for payload in XSS_POSTS:
        expect(recent).to_contain_text(payload)  # the characters themselves, visible
    shot(page, "dashboard")
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    assert page.locator("#experiment-admin").count() == 0  # no admin token configured: no admin controls


def test_the_models_tab_lists_versions_and_renders_the_card(live, page):
    from playwright.sync_api import expect

    server, _, _ = live
    open_ui(page, server.url)
    tab(page, "Models")
    expect(page.locator("#models-table")).to_contain_text("tiny-ui:2", timeout=30_000)
    expect(page.locator("#model-card")).to_contain_text("tiny-ui", timeout=30_000)
    shot(page, "models")


def test_with_an_admin_token_the_dashboard_stops_an_experiment(live, page):
    """Runs after the arena test: it ends the experiment the arena uses."""
    from playwright.sync_api import expect

    from tweetforge.experiments.ab import get_experiment

    _, engine, service = live
    with LiveServer(served_with_ui(service, "ui-admin-token")) as admin_server:
        open_ui(page, admin_server.url)
        tab(page, "Dashboard")
        expect(page.locator("#experiment-state")).to_contain_text("tiny-arena", timeout=60_000)
        page.locator("#experiment-admin").get_by_text("Admin: stop or promote").click()
        page.locator("#admin-token input").fill("not-the-token")
        page.locator("#admin-stop").click()
        expect(page.locator("#admin-outcome")).to_contain_text("wrong admin token", timeout=30_000)
        assert get_experiment(engine, "tiny-arena").status == "running"
        page.locator("#admin-token input").fill("ui-admin-token")
        page.locator("#admin-stop").click()
        expect(page.locator("#admin-outcome")).to_contain_text("Stopped tiny-arena", timeout=30_000)
        expect(page.locator("#experiment-state")).to_contain_text("(stopped)")
        shot(page, "dashboard-admin")
    assert get_experiment(engine, "tiny-arena").status != "running"


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    home = tmp_path_factory.mktemp("empty-home")
    engine = engine_for(f"sqlite:///{home / 'tweetforge.db'}")
    app, _ = app_for(home, engine, [], admin_token="ui-admin-token")
    with LiveServer(app) as server:
        yield server


def test_an_empty_home_says_which_command_to_run(empty, page):
    from playwright.sync_api import expect

    open_ui(page, empty.url)
    expect(page.locator("#no-models")).to_contain_text("tweetforge train", timeout=30_000)
    expect(page.locator("#generate-button")).to_be_disabled()
    shot(page, "empty-generate")
    tab(page, "Arena")
    expect(page.locator("#no-experiment")).to_contain_text("tweetforge ab create", timeout=30_000)
    tab(page, "Dashboard")
    expect(page.get_by_text("No posts stored yet")).to_be_visible(timeout=30_000)
    expect(page.locator("#no-experiments")).to_contain_text("tweetforge ab create")
    expect(page.locator("#experiment-admin")).to_have_count(1)  # an admin token is configured here
    shot(page, "empty-dashboard")
    tab(page, "Models")
    expect(page.locator("#no-models-registry")).to_contain_text("tweetforge train", timeout=30_000)
