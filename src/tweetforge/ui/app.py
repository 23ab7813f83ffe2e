"""The web UI, a Gradio app mounted into the service's FastAPI app (`tweetforge serve`, at /): generate posts,
vote in an arena, a dashboard of the data, training, evaluations and experiments, and the model registry.

Everything goes through the same Service as the API, so experiment assignment, the copy filter, the
generation log and feedback apply. Post text is only ever put in text components (a textbox, a table
cell), never in HTML or Markdown, so a post holding `<script>` shows as those characters."""

from __future__ import annotations

import html
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tweetforge.generation.generate import Sampling
from tweetforge.serving.service import Service, ServiceError
from tweetforge.ui import dashboard

MAX_POSTS = 10
CSS = """
.generated-badge { display: inline-block; padding: 1px 8px; border-radius: 9px; background: #6d28d9; color: white;
                   font-size: 0.75em; font-weight: 600; letter-spacing: 0.04em; margin-left: 6px; }
.post-head { font-size: 0.95em; }
.post-head .handle { font-weight: 700; }
.post-head .meta { color: #6b7280; margin-left: 6px; }
"""


def gradio():  # type: ignore[no-untyped-def]
    """Gradio, imported on first use (it costs seconds), with its usage analytics off."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import gradio

    return gradio


def card_head(author: str | None, source: str, characters: int) -> str:
    who = html.escape(f"@{author}" if author else "@unknown")
    return (f'<div class="post-head"><span class="handle">{who}</span><span class="generated-badge">GENERATED</span>'
            f'<span class="meta">{html.escape(source)} · {characters} characters</span></div>')


@dataclass
class Page:
    """What every tab shares: the service, the admin token, where plots are drawn, and the visitor's id
    (kept in the browser, so experiment assignment is sticky across visits)."""

    service: Service
    admin_token: str | None
    plots: Path
    user_id: Any = None


@dataclass
class Offer:
    """What the Generate and Arena tabs offer: built into the page (so it is usable as soon as it renders)
    and refreshed by each page load (models reloaded or experiments started since)."""

    choices: list[tuple[str, str]]
    model: str | None
    authors: list[str]
    running: list[str]


def authors_of(service: Service, model: str | None) -> list[str]:
    loaded = next((m for m in service.loaded() if m.version.ref == model), None)
    if loaded is None or not loaded.info["params"].get("multi_author"):
        return []
    return list(loaded.info["params"]["authors"])


def current_offer(service: Service) -> Offer:
    running = dashboard.experiment_names(service.engine, running_only=True)
    by_name = sorted(service.loaded(), key=lambda m: (m.version.name, -m.version.version))
    choices = [(f"{m.version.ref} ({', '.join(m.version.aliases)})" if m.version.aliases else m.version.ref, m.version.ref) for m in by_name]
    choices += [(f"experiment {name}", name) for name in running]
    champions_first = sorted(by_name, key=lambda m: "champion" not in m.version.aliases)
    first = champions_first[0].version.ref if champions_first else (choices[0][1] if choices else None)
    return Offer(choices, first, authors_of(service, first), running)


def author_choice(authors: list[str]) -> Any:
    return gradio().update(choices=authors, value=authors[0] if authors else None, visible=bool(authors))


def refused(prefix: str, message: str) -> str:
    return f"**{prefix}:** {html.escape(message, quote=False)}"


@dataclass
class Refreshed:
    """A tab's components that each page load updates, and the function giving their updates."""

    outputs: list[Any]
    update: Callable[..., tuple]


def generate_tab(page: Page, offer: Offer) -> tuple[Any, Refreshed]:
    """Posts from a model or an experiment, each on a card marked GENERATED, with like and dislike buttons
    that become feedback. Returns the model dropdown (the page load reads it) and what a load refreshes."""
    gr = gradio()
    with gr.Tab("Generate", id="generate"):
        no_models = gr.Markdown(dashboard.NO_MODELS, visible=not offer.choices, elem_id="no-models")
        with gr.Row():
            model = gr.Dropdown(label="Model or experiment", choices=offer.choices, value=offer.model, interactive=True, elem_id="model")
            author = gr.Dropdown(label="Author", choices=offer.authors, value=(offer.authors or [None])[0], visible=bool(offer.authors),
                                 interactive=True, elem_id="author")
        prompt = gr.Textbox(label="Prompt (optional: the start of the post)", max_length=280, elem_id="prompt")
        with gr.Row():
            count = gr.Slider(1, MAX_POSTS, value=3, step=1, label="Posts", elem_id="count")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p", elem_id="top-p")
        generate = gr.Button("Generate", variant="primary", interactive=bool(offer.choices), elem_id="generate-button")
        outcome = gr.Markdown(elem_id="generate-outcome")
        generation = gr.State(None)
        cards, heads, texts, likes, dislikes = [], [], [], [], []
        for _ in range(MAX_POSTS):
            with gr.Group(visible=False, elem_classes="post-card") as card:
                heads.append(gr.HTML())
                texts.append(gr.Textbox(show_label=False, interactive=False, lines=2, buttons=["copy"], elem_classes="post-text"))
                with gr.Row():
                    likes.append(gr.Button("Like", size="sm", elem_classes="like-button"))
                    dislikes.append(gr.Button("Dislike", size="sm", elem_classes="dislike-button"))
            cards.append(card)

    model.change(lambda chosen: author_choice(authors_of(page.service, chosen)), inputs=model, outputs=author)

    def on_generate(chosen, who, text, n, temp, nucleus, user):  # type: ignore[no-untyped-def]
        unchanged = [gr.update(visible=False)] * MAX_POSTS + [gr.update()] * (2 * MAX_POSTS)
        if not chosen:
            return None, dashboard.NO_MODELS, *unchanged
        try:
            served = page.service.generate(chosen, text or "", int(n), author=who, user_id=user,
                                           sampling=Sampling(temperature=float(temp), top_p=float(nucleus)))
        except ServiceError as exc:
            return None, refused("Not generated", exc.message), *unchanged
        source = f"experiment {served.experiment}" if served.experiment else served.version.ref
        notes = [f"{len(served.posts)} generated post{'s' if len(served.posts) != 1 else ''} from {html.escape(source)}."]
        if served.filtered_copies:
            notes.append(f"{served.filtered_copies} draw(s) copied a training post and were drawn again.")
        if served.dropped:
            notes.append(f"{served.dropped} post(s) kept copying and were left out.")
        padded = served.posts[:MAX_POSTS] + [None] * (MAX_POSTS - len(served.posts[:MAX_POSTS]))
        return (served.generation_id, " ".join(notes), *[gr.update(visible=p is not None) for p in padded],
                *[card_head(served.author, source, len(p.text)) if p else "" for p in padded], *[p.text if p else "" for p in padded])

    generate.click(on_generate, inputs=[model, author, prompt, count, temperature, top_p, page.user_id],
                   outputs=[generation, outcome, *cards, *heads, *texts])

    def feedback_for(event: str, index: int) -> Callable[[str | None, str | None], str]:
        def send(generation_id: str | None, user: str | None) -> str:
            if generation_id is None:
                return "Generate some posts first."
            try:
                page.service.feedback(generation_id, event, user_id=user)
            except ServiceError as exc:
                return refused("Not recorded", exc.message)
            return f"{event.capitalize()} recorded for post {index + 1}. Thank you."
        return send

    for i in range(MAX_POSTS):
        likes[i].click(feedback_for("like", i), inputs=[generation, page.user_id], outputs=outcome)
        dislikes[i].click(feedback_for("dislike", i), inputs=[generation, page.user_id], outputs=outcome)

    def refreshed(offer: Offer, chosen: str | None) -> tuple:
        values = [value for _, value in offer.choices]
        keep = chosen if chosen in values else offer.model  # what the visitor picked before this answer came
        return (gr.update(choices=offer.choices, value=keep), author_choice(authors_of(page.service, keep)),
                gr.update(visible=not values), gr.update(interactive=bool(values)))

    return model, Refreshed([model, author, no_models, generate], refreshed)


def arena_tab(page: Page, offer: Offer) -> Refreshed:
    """Two unlabelled posts from two variants of a running experiment; the vote is feedback, and the models
    are revealed after it."""
    gr = gradio()
    with gr.Tab("Arena", id="arena") as tab:
        no_experiment = gr.Markdown(dashboard.NO_RUNNING_EXPERIMENT, visible=not offer.running, elem_id="no-experiment")
        experiment = gr.Dropdown(label="Experiment", choices=offer.running, value=(offer.running or [None])[0], interactive=True,
                                 elem_id="arena-experiment")
        prompt = gr.Textbox(label="Prompt (optional)", max_length=280, elem_id="arena-prompt")
        show_pair = gr.Button("Show two posts", variant="primary", interactive=bool(offer.running), elem_id="arena-show")
        pair = gr.State(None)
        with gr.Row():
            with gr.Column():
                post_a = gr.Textbox(label="Post A (generated)", interactive=False, lines=3, elem_id="post-a")
                vote_a = gr.Button("A is better", interactive=False, elem_id="vote-a")
            with gr.Column():
                post_b = gr.Textbox(label="Post B (generated)", interactive=False, lines=3, elem_id="post-b")
                vote_b = gr.Button("B is better", interactive=False, elem_id="vote-b")
        both_bad = gr.Button("Both bad", interactive=False, elem_id="vote-both-bad")
        reveal = gr.Markdown(elem_id="arena-reveal")
    votes = (gr.update(interactive=False),) * 3

    def on_show(name: str | None, text: str, user: str | None):  # type: ignore[no-untyped-def]
        if not name:
            return None, "", "", *votes, dashboard.NO_RUNNING_EXPERIMENT
        try:
            pair_id, user, shown = page.service.arena(name, text or "", user_id=user)
        except ServiceError as exc:
            return None, "", "", *votes, refused("No pair", exc.message)
        posts = [s.posts[0].text if s.posts else "(every draw copied a training post; none left)" for s in shown]
        state = {"pair": pair_id, "ids": [s.generation_id for s in shown],
                 "who": [f"variant **{html.escape(s.variant or '')}** ({s.version.ref})" for s in shown]}
        return state, posts[0], posts[1], *(gr.update(interactive=True),) * 3, "Which post is better? The models are revealed after your vote."

    show_pair.click(on_show, inputs=[experiment, prompt, page.user_id], outputs=[pair, post_a, post_b, vote_a, vote_b, both_bad, reveal])

    def vote(choice: int | None) -> Callable[[dict | None, str | None], tuple]:
        def send(state: dict | None, user: str | None) -> tuple:
            if not state:
                return None, *votes, "Show two posts first."
            winner = state["ids"][choice] if choice is not None else None
            try:
                page.service.feedback(state["ids"][0], "choice", winner_id=winner, user_id=user)
            except ServiceError as exc:
                return state, *votes, refused("Not recorded", exc.message)
            verdict = "both bad" if choice is None else f"{'A' if choice == 0 else 'B'} is better"
            return None, *votes, f"Vote recorded ({verdict}). A was {state['who'][0]}; B was {state['who'][1]}."
        return send

    for button, choice in ((vote_a, 0), (vote_b, 1), (both_bad, None)):
        button.click(vote(choice), inputs=[pair, page.user_id], outputs=[pair, vote_a, vote_b, both_bad, reveal])

    def offered(running: list[str]) -> tuple:
        return (gr.update(choices=running, value=running[0] if running else None),
                gr.update(value=dashboard.NO_RUNNING_EXPERIMENT, visible=not running), gr.update(interactive=bool(running)))

    outputs = [experiment, no_experiment, show_pair]
    tab.select(lambda: offered(dashboard.experiment_names(page.service.engine, running_only=True)), outputs=outputs)
    return Refreshed(outputs, lambda offer: offered(offer.running))


def dashboard_tab(page: Page) -> None:
    """Plots and tables of the data, each version's training and evaluation, and the experiments, with
    stop and promote behind the admin token."""
    gr = gradio()
    engine, plots = page.service.engine, page.plots
    with gr.Tab("Dashboard", id="dashboard") as tab:
        refresh = gr.Button("Refresh", size="sm", elem_id="dashboard-refresh")
        gr.Markdown("## Data: what cleaning keeps (default rules)")
        data_empty = gr.Markdown(visible=False)
        data_table = gr.Dataframe(interactive=False, visible=False, elem_id="data-table")
        data_plot = gr.Image(type="filepath", label="Posts per month and post lengths", interactive=False, visible=False,
                             elem_id="data-plot")
        recent = gr.Dataframe(label="Latest stored posts", interactive=False, wrap=True, visible=False, elem_id="recent-posts")
        gr.Markdown("## Training and evaluation")
        version = gr.Dropdown(label="Model version", choices=[], interactive=True, elem_id="dashboard-version")
        training_empty = gr.Markdown(visible=False)
        training_plot = gr.Image(type="filepath", label="Training curve", interactive=False, visible=False, elem_id="training-plot")
        evaluation_text = gr.Markdown()
        evaluation_table = gr.Dataframe(interactive=False, visible=False, elem_id="evaluation-table")
        evaluation_plot = gr.Image(type="filepath", label="Comparison with the baselines", interactive=False, visible=False,
                                   elem_id="evaluation-plot")
        gr.Markdown("## Experiments")
        experiments_empty = gr.Markdown(visible=False, elem_id="no-experiments")
        experiment = gr.Dropdown(label="Experiment", choices=[], interactive=True, elem_id="dashboard-experiment")
        experiment_text = gr.Markdown(elem_id="experiment-state")
        experiment_table = gr.Dataframe(interactive=False, visible=False, elem_id="experiment-table")
        experiment_plot = gr.Image(type="filepath", label="Rates over time", interactive=False, visible=False, elem_id="experiment-plot")
        gr.Markdown("## Pipeline: every watch cycle")
        pipeline_empty = gr.Markdown(visible=False, elem_id="no-pipeline")
        pipeline_plot = gr.Image(type="filepath", label="Cycles and the gate's numbers", interactive=False, visible=False,
                                 elem_id="pipeline-plot")
        pipeline_table = gr.Dataframe(interactive=False, wrap=True, visible=False, elem_id="pipeline-table")
        with gr.Accordion("Admin: stop or promote", open=False, visible=page.admin_token is not None, elem_id="experiment-admin"):
            admin_key = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
            with gr.Row():
                stop_button = gr.Button("Stop experiment", variant="stop", elem_id="admin-stop")
                promote_button = gr.Button("Promote the winner", elem_id="admin-promote")
            admin_outcome = gr.Markdown(elem_id="admin-outcome")

    def show_version(ref: str | None) -> tuple:
        from tweetforge.registry.versions import resolve

        if not ref:
            return gr.update(value=dashboard.NO_MODELS, visible=True), image(None), "", table([]), image(None)
        chosen = resolve(engine, ref)
        training = dashboard.training_view(chosen, plots)
        evaluation = dashboard.evaluation_view(engine, chosen, plots)
        return (gr.update(value=training.empty or "", visible=training.empty is not None), image(training.plot),
                evaluation.empty or evaluation.text, table(evaluation.rows), image(evaluation.plot))

    def show_experiment(name: str | None) -> tuple:
        if not name:
            return "", table([]), image(None)
        view = dashboard.experiment_view(engine, name, plots)
        return view.text, table(view.rows), image(view.plot)

    def on_open() -> tuple:
        from tweetforge.experiments.ab import list_experiments

        data = dashboard.data_view(engine, plots)
        shown = dashboard.versions(engine)
        refs = [v.ref for v in shown]
        champion = next((v.ref for v in shown if "champion" in v.aliases), refs[0] if refs else None)
        experiments = list_experiments(engine)
        names = [e.name for e in experiments]
        first = next((e.name for e in experiments if e.status == "running"), names[0] if names else None)
        return (gr.update(value=data.empty or "", visible=data.empty is not None), table(data.rows), image(data.plot), table(data.recent),
                gr.update(choices=refs, value=champion, visible=bool(refs)), *show_version(champion),
                gr.update(value=dashboard.NO_EXPERIMENTS, visible=not names), gr.update(choices=names, value=first, visible=bool(names)),
                *show_experiment(first), *show_pipeline())

    def show_pipeline() -> tuple:
        view = dashboard.pipeline_view(engine, plots)
        return gr.update(value=view.empty or "", visible=view.empty is not None), image(view.plot), table(view.rows)

    version_outputs = [training_empty, training_plot, evaluation_text, evaluation_table, evaluation_plot]
    experiment_outputs = [experiment_text, experiment_table, experiment_plot]
    outputs = [data_empty, data_table, data_plot, recent, version, *version_outputs, experiments_empty, experiment, *experiment_outputs,
               pipeline_empty, pipeline_plot, pipeline_table]
    tab.select(on_open, outputs=outputs)
    refresh.click(on_open, outputs=outputs)
    version.input(show_version, inputs=version, outputs=version_outputs)
    experiment.input(show_experiment, inputs=experiment, outputs=experiment_outputs)

    def admin(action: str) -> Callable[[str, str | None], tuple]:
        def run(token: str, name: str | None) -> tuple:
            from tweetforge.experiments.ab import ExperimentError, promote_variant, stop_experiment

            if page.admin_token is None or not secrets.compare_digest((token or "").encode(), page.admin_token.encode()):
                return "**Refused:** wrong admin token.", *show_experiment(name)
            if not name:
                return "Choose an experiment first.", *show_experiment(name)
            try:
                if action == "stop":
                    stop_experiment(engine, name)
                    done = f"Stopped {html.escape(name)}."
                else:
                    variant = promote_variant(engine, name, None)
                    done = f"Promoted variant {html.escape(variant.name)} ({variant.model_ref}) to champion."
            except ExperimentError as exc:
                done = refused("Not done", str(exc))
            return done, *show_experiment(name)
        return run

    stop_button.click(admin("stop"), inputs=[admin_key, experiment], outputs=[admin_outcome, *experiment_outputs])
    promote_button.click(admin("promote"), inputs=[admin_key, experiment], outputs=[admin_outcome, *experiment_outputs])


def models_tab(page: Page) -> None:
    """The registry: every version with its aliases and headline metrics, and its model card."""
    gr = gradio()
    engine = page.service.engine
    with gr.Tab("Models", id="models") as tab:
        empty = gr.Markdown(visible=False, elem_id="no-models-registry")
        versions = gr.Dataframe(interactive=False, visible=False, elem_id="models-table")
        card_version = gr.Dropdown(label="Model card", choices=[], interactive=True, elem_id="card-version")
        card = gr.Markdown(elem_id="model-card")

    def show_card(ref: str | None) -> str:
        from tweetforge.registry.versions import resolve

        return dashboard.model_card(resolve(engine, ref)) if ref else ""

    def on_open() -> tuple:
        view = dashboard.models_view(engine)
        refs = [row["model"] for row in view.rows]
        return (gr.update(value=view.empty or "", visible=view.empty is not None), table(view.rows),
                gr.update(choices=refs, value=refs[0] if refs else None, visible=bool(refs)), show_card(refs[0] if refs else None))

    tab.select(on_open, outputs=[empty, versions, card_version, card])
    card_version.input(show_card, inputs=card_version, outputs=card)


def build_ui(service: Service, admin_token: str | None = None, plots: Path | None = None) -> Any:
    gr = gradio()

    from tweetforge.config import get_settings
    from tweetforge.experiments.ab import new_user_id

    page = Page(service, admin_token, plots or get_settings().home / "cache" / "ui")
    offer = current_offer(service)
    with gr.Blocks(title="tweetforge") as ui:
        page.user_id = gr.BrowserState(None, storage_key="tweetforge-user-id")
        gr.Markdown("# tweetforge\nPosts written by models trained on someone's posts. Everything shown here as "
                    "**GENERATED** was written by a model, not by the person.")
        model, generate = generate_tab(page, offer)
        arena = arena_tab(page, offer)
        dashboard_tab(page)
        models_tab(page)

        def on_load(stored_user: str | None, chosen: str | None) -> tuple:
            offer = current_offer(service)
            return stored_user or new_user_id(), *generate.update(offer, chosen), *arena.update(offer)

        ui.load(on_load, inputs=[page.user_id, model], outputs=[page.user_id, *generate.outputs, *arena.outputs])
    return ui


def table(rows: list[dict[str, Any]]) -> Any:
    """A table update: the rows, or hidden when there are none."""
    import pandas as pd

    return gradio().update(value=pd.DataFrame(rows) if rows else None, visible=bool(rows))


def image(path: Path | None) -> Any:
    """An image update: the plot, or hidden when there is none."""
    return gradio().update(value=str(path) if path else None, visible=path is not None)


def mount_ui(app: Any, service: Service, *, admin_token: str | None = None, path: str = "/") -> Any:
    """The web UI at `path` of the API's app. Mount it last: at /, it takes every path the API does not answer."""
    return gradio().mount_gradio_app(app, build_ui(service, admin_token).queue(default_concurrency_limit=16), path=path, css=CSS,
                               ssr_mode=False, footer_links=["api"], show_error=True)
