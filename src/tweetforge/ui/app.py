"""The web UI, a Gradio app mounted into the service's FastAPI app (`tweetforge serve`, at /): generate posts,
vote in an arena, a dashboard of the data, training, evaluations and experiments, and the model registry.

Everything goes through the same Service as the API, so experiment assignment, the copy filter, the
generation log and feedback apply. Post text is only ever put in text components (a textbox, a table
cell), never in HTML or Markdown, so a post holding `<script>` shows as those characters."""

from __future__ import annotations

import html
import os
import secrets
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


def build_ui(service: Service, admin_token: str | None = None, plots: Path | None = None) -> Any:
    gr = gradio()

    from tweetforge.config import get_settings

    engine = service.engine
    plots = plots or get_settings().home / "cache" / "ui"

    def model_choices(running: list[str]) -> list[tuple[str, str]]:
        choices = []
        for loaded in sorted(service.loaded(), key=lambda m: (m.version.name, -m.version.version)):
            aliases = f" ({', '.join(loaded.version.aliases)})" if loaded.version.aliases else ""
            choices.append((f"{loaded.version.ref}{aliases}", loaded.version.ref))
        choices += [(f"experiment {name}", name) for name in running]
        return choices

    def authors_of(model: str | None) -> list[str]:
        loaded = next((m for m in service.loaded() if m.version.ref == model), None)
        if loaded is None or not loaded.info["params"].get("multi_author"):
            return []
        return list(loaded.info["params"]["authors"])

    def page_state() -> dict[str, Any]:
        """What the Generate and Arena tabs offer: built into the page (so it is usable as soon as it
        renders) and refreshed by each page load (models reloaded or experiments started since)."""
        running = dashboard.experiment_names(engine, running_only=True)
        choices = model_choices(running)
        loaded = sorted(service.loaded(), key=lambda m: ("champion" not in m.version.aliases, m.version.name, -m.version.version))
        first = loaded[0].version.ref if loaded else (choices[0][1] if choices else None)
        return {"choices": choices, "model": first, "authors": authors_of(first), "running": running}

    initial = page_state()

    with gr.Blocks(title="tweetforge") as ui:
        user_id = gr.BrowserState(None, storage_key="tweetforge-user-id")
        gr.Markdown("# tweetforge\nPosts written by models trained on someone's posts. Everything shown here as "
                    "**GENERATED** was written by a model, not by the person.")

        # ---------------------------------------------------------------- generate
        with gr.Tab("Generate", id="generate"):
            no_models = gr.Markdown(dashboard.NO_MODELS, visible=not initial["choices"], elem_id="no-models")
            with gr.Row():
                model = gr.Dropdown(label="Model or experiment", choices=initial["choices"], value=initial["model"], interactive=True,
                                    elem_id="model")
                author = gr.Dropdown(label="Author", choices=initial["authors"], value=(initial["authors"] or [None])[0],
                                     visible=bool(initial["authors"]), interactive=True, elem_id="author")
            prompt = gr.Textbox(label="Prompt (optional: the start of the post)", max_length=280, elem_id="prompt")
            with gr.Row():
                count = gr.Slider(1, MAX_POSTS, value=3, step=1, label="Posts", elem_id="count")
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.01, label="Top-p", elem_id="top-p")
            generate = gr.Button("Generate", variant="primary", interactive=bool(initial["choices"]), elem_id="generate-button")
            outcome = gr.Markdown(elem_id="generate-outcome")
            generation = gr.State(None)
            cards, heads, texts, likes, dislikes = [], [], [], [], []
            for i in range(MAX_POSTS):
                with gr.Group(visible=False, elem_classes="post-card") as card:
                    heads.append(gr.HTML())
                    texts.append(gr.Textbox(show_label=False, interactive=False, lines=2, buttons=["copy"], elem_classes="post-text"))
                    with gr.Row():
                        likes.append(gr.Button("Like", size="sm", elem_classes="like-button"))
                        dislikes.append(gr.Button("Dislike", size="sm", elem_classes="dislike-button"))
                cards.append(card)

        # ---------------------------------------------------------------- arena
        with gr.Tab("Arena", id="arena") as arena_tab:
            no_experiment = gr.Markdown(dashboard.NO_RUNNING_EXPERIMENT, visible=not initial["running"], elem_id="no-experiment")
            experiment = gr.Dropdown(label="Experiment", choices=initial["running"], value=(initial["running"] or [None])[0],
                                     interactive=True, elem_id="arena-experiment")
            arena_prompt = gr.Textbox(label="Prompt (optional)", max_length=280, elem_id="arena-prompt")
            show_pair = gr.Button("Show two posts", variant="primary", interactive=bool(initial["running"]), elem_id="arena-show")
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

        # ---------------------------------------------------------------- dashboard
        with gr.Tab("Dashboard", id="dashboard") as dashboard_tab:
            refresh = gr.Button("Refresh", size="sm", elem_id="dashboard-refresh")
            gr.Markdown("## Data: what cleaning keeps (default rules)")
            data_empty = gr.Markdown(visible=False)
            data_table = gr.Dataframe(interactive=False, visible=False, elem_id="data-table")
            data_plot = gr.Image(type="filepath", label="Posts per month and post lengths", interactive=False, visible=False, elem_id="data-plot")
            recent = gr.Dataframe(label="Latest stored posts", interactive=False, wrap=True, visible=False, elem_id="recent-posts")
            gr.Markdown("## Training and evaluation")
            version = gr.Dropdown(label="Model version", choices=[], interactive=True, elem_id="dashboard-version")
            training_empty = gr.Markdown(visible=False)
            training_plot = gr.Image(type="filepath", label="Training curve", interactive=False, visible=False, elem_id="training-plot")
            evaluation_text = gr.Markdown()
            evaluation_table = gr.Dataframe(interactive=False, visible=False, elem_id="evaluation-table")
            evaluation_plot = gr.Image(type="filepath", label="Comparison with the baselines", interactive=False, visible=False, elem_id="evaluation-plot")
            gr.Markdown("## Experiments")
            experiments_empty = gr.Markdown(visible=False, elem_id="no-experiments")
            experiment_name = gr.Dropdown(label="Experiment", choices=[], interactive=True, elem_id="dashboard-experiment")
            experiment_text = gr.Markdown(elem_id="experiment-state")
            experiment_table = gr.Dataframe(interactive=False, visible=False, elem_id="experiment-table")
            experiment_plot = gr.Image(type="filepath", label="Rates over time", interactive=False, visible=False, elem_id="experiment-plot")
            with gr.Accordion("Admin: stop or promote", open=False, visible=admin_token is not None, elem_id="experiment-admin"):
                admin_key = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
                with gr.Row():
                    stop_button = gr.Button("Stop experiment", variant="stop", elem_id="admin-stop")
                    promote_button = gr.Button("Promote the winner", elem_id="admin-promote")
                admin_outcome = gr.Markdown(elem_id="admin-outcome")

        # ---------------------------------------------------------------- models
        with gr.Tab("Models", id="models") as models_tab:
            models_empty = gr.Markdown(visible=False, elem_id="no-models-registry")
            models_table = gr.Dataframe(interactive=False, visible=False, elem_id="models-table")
            card_version = gr.Dropdown(label="Model card", choices=[], interactive=True, elem_id="card-version")
            card = gr.Markdown(elem_id="model-card")

        # ---------------------------------------------------------------- behaviour

        def arena_offer(running: list[str]) -> tuple:
            """The arena's experiment list, its empty-state note and its button, for these running experiments."""
            return (gr.update(choices=running, value=running[0] if running else None),
                    gr.update(value=dashboard.NO_RUNNING_EXPERIMENT, visible=not running), gr.update(interactive=bool(running)))

        def on_load(stored_user: str | None, chosen: str | None):
            from tweetforge.experiments.ab import new_user_id

            state = page_state()
            values = [value for _, value in state["choices"]]
            keep = chosen if chosen in values else state["model"]  # what the visitor picked before this answer came
            authors = authors_of(keep)
            return (stored_user or new_user_id(), gr.update(choices=state["choices"], value=keep),
                    gr.update(choices=authors, value=authors[0] if authors else None, visible=bool(authors)),
                    gr.update(visible=not values), gr.update(interactive=bool(values)), *arena_offer(state["running"]))

        ui.load(on_load, inputs=[user_id, model], outputs=[user_id, model, author, no_models, generate, experiment, no_experiment, show_pair])

        def on_model(chosen: str | None):
            authors = authors_of(chosen)
            return gr.update(choices=authors, value=authors[0] if authors else None, visible=bool(authors))

        model.change(on_model, inputs=model, outputs=author)

        def on_generate(chosen, who, text, n, temp, nucleus, user):
            hidden = [gr.update(visible=False)] * MAX_POSTS
            if not chosen:
                return None, dashboard.NO_MODELS, *hidden, *[gr.update()] * (2 * MAX_POSTS)
            try:
                served = service.generate(chosen, text or "", int(n), who, Sampling(temperature=float(temp), top_p=float(nucleus)), None, user)
            except ServiceError as exc:
                return None, f"**Not generated:** {html.escape(exc.message, quote=False)}", *hidden, *[gr.update()] * (2 * MAX_POSTS)
            source = (f"experiment {served.experiment}" if served.experiment else served.version.ref)
            notes = [f"{len(served.posts)} generated post{'s' if len(served.posts) != 1 else ''} from {html.escape(source)}."]
            if served.filtered_copies:
                notes.append(f"{served.filtered_copies} draw(s) copied a training post and were drawn again.")
            if served.dropped:
                notes.append(f"{served.dropped} post(s) kept copying and were left out.")
            padded = served.posts[:MAX_POSTS] + [None] * (MAX_POSTS - len(served.posts[:MAX_POSTS]))
            return (served.generation_id, " ".join(notes), *[gr.update(visible=p is not None) for p in padded],
                    *[card_head(served.author, source, len(p.text)) if p else "" for p in padded], *[p.text if p else "" for p in padded])

        generate.click(on_generate, inputs=[model, author, prompt, count, temperature, top_p, user_id],
                       outputs=[generation, outcome, *cards, *heads, *texts])

        def feedback_for(event: str, index: int):
            def send(generation_id: str | None, user: str | None) -> str:
                if generation_id is None:
                    return "Generate some posts first."
                try:
                    service.feedback(generation_id, event, user_id=user)
                except ServiceError as exc:
                    return f"**Not recorded:** {html.escape(exc.message, quote=False)}"
                return f"{event.capitalize()} recorded for post {index + 1}. Thank you."
            return send

        for i in range(MAX_POSTS):
            likes[i].click(feedback_for("like", i), inputs=[generation, user_id], outputs=outcome)
            dislikes[i].click(feedback_for("dislike", i), inputs=[generation, user_id], outputs=outcome)

        # arena
        def on_show(name: str | None, text: str, user: str | None):
            off = (gr.update(interactive=False),) * 3
            if not name:
                return None, "", "", *off, dashboard.NO_RUNNING_EXPERIMENT
            try:
                pair_id, user, shown = service.arena(name, text or "", None, None, user)
            except ServiceError as exc:
                return None, "", "", *off, f"**No pair:** {html.escape(exc.message, quote=False)}"
            texts_ = [s.posts[0].text if s.posts else "(every draw copied a training post; none left)" for s in shown]
            state = {"pair": pair_id, "ids": [s.generation_id for s in shown],
                     "who": [f"variant **{html.escape(s.variant or '')}** ({s.version.ref})" for s in shown]}
            on = (gr.update(interactive=True),) * 3
            return state, texts_[0], texts_[1], *on, "Which post is better? The models are revealed after your vote."

        show_pair.click(on_show, inputs=[experiment, arena_prompt, user_id], outputs=[pair, post_a, post_b, vote_a, vote_b, both_bad, reveal])

        def vote(choice: int | None):
            def send(state: dict | None, user: str | None):
                off = (gr.update(interactive=False),) * 3
                if not state:
                    return None, *off, "Show two posts first."
                winner = state["ids"][choice] if choice is not None else None
                try:
                    service.feedback(state["ids"][0], "choice", winner_id=winner, user_id=user)
                except ServiceError as exc:
                    return state, *off, f"**Not recorded:** {html.escape(exc.message, quote=False)}"
                verdict = "both bad" if choice is None else f"{'A' if choice == 0 else 'B'} is better"
                return None, *off, f"Vote recorded ({verdict}). A was {state['who'][0]}; B was {state['who'][1]}."
            return send

        for button, choice in ((vote_a, 0), (vote_b, 1), (both_bad, None)):
            button.click(vote(choice), inputs=[pair, user_id], outputs=[pair, vote_a, vote_b, both_bad, reveal])

        arena_tab.select(lambda: arena_offer(dashboard.experiment_names(engine, running_only=True)),
                         outputs=[experiment, no_experiment, show_pair])

        # dashboard
        def show_version(ref: str | None):
            from tweetforge.registry.versions import resolve

            if not ref:
                return gr.update(value=dashboard.NO_MODELS, visible=True), image(None), "", table([]), image(None)
            chosen = resolve(engine, ref)
            training = dashboard.training_view(chosen, plots)
            evaluation = dashboard.evaluation_view(engine, chosen, plots)
            return (gr.update(value=training.empty or "", visible=training.empty is not None), image(training.plot),
                    evaluation.empty or evaluation.text, table(evaluation.rows), image(evaluation.plot))

        def show_experiment(name: str | None):
            if not name:
                return "", table([]), image(None)
            view = dashboard.experiment_view(engine, name, plots)
            return view.text, table(view.rows), image(view.plot)

        def on_dashboard():
            from tweetforge.experiments.ab import list_experiments

            data = dashboard.data_view(engine, plots)
            shown = dashboard.versions(engine)
            refs = [v.ref for v in shown]
            champion = next((v.ref for v in shown if "champion" in v.aliases), refs[0] if refs else None)
            experiments = list_experiments(engine)
            names = [e.name for e in experiments]
            first_experiment = next((e.name for e in experiments if e.status == "running"), names[0] if names else None)
            return (gr.update(value=data.empty or "", visible=data.empty is not None), table(data.rows), image(data.plot), table(data.recent),
                    gr.update(choices=refs, value=champion, visible=bool(refs)), *show_version(champion),
                    gr.update(value=dashboard.NO_EXPERIMENTS, visible=not names), gr.update(choices=names, value=first_experiment, visible=bool(names)),
                    *show_experiment(first_experiment))

        dashboard_outputs = [data_empty, data_table, data_plot, recent, version, training_empty, training_plot, evaluation_text,
                             evaluation_table, evaluation_plot, experiments_empty, experiment_name, experiment_text, experiment_table,
                             experiment_plot]
        dashboard_tab.select(on_dashboard, outputs=dashboard_outputs)
        refresh.click(on_dashboard, outputs=dashboard_outputs)
        version.input(show_version, inputs=version, outputs=[training_empty, training_plot, evaluation_text, evaluation_table, evaluation_plot])
        experiment_name.input(show_experiment, inputs=experiment_name, outputs=[experiment_text, experiment_table, experiment_plot])

        def admin(action: str):
            def run(token: str, name: str | None):
                from tweetforge.experiments.ab import (
                    ExperimentError,
                    promote_variant,
                    stop_experiment,
                )

                if admin_token is None or not secrets.compare_digest((token or "").encode(), admin_token.encode()):
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
                    done = f"**Not done:** {html.escape(str(exc), quote=False)}"
                return done, *show_experiment(name)
            return run

        admin_outputs = [admin_outcome, experiment_text, experiment_table, experiment_plot]
        stop_button.click(admin("stop"), inputs=[admin_key, experiment_name], outputs=admin_outputs)
        promote_button.click(admin("promote"), inputs=[admin_key, experiment_name], outputs=admin_outputs)

        # models
        def show_card(ref: str | None) -> str:
            from tweetforge.registry.versions import resolve

            return dashboard.model_card(resolve(engine, ref)) if ref else ""

        def on_models():
            view = dashboard.models_view(engine)
            refs = [row["model"] for row in view.rows]
            return (gr.update(value=view.empty or "", visible=view.empty is not None), table(view.rows),
                    gr.update(choices=refs, value=refs[0] if refs else None, visible=bool(refs)), show_card(refs[0] if refs else None))

        models_tab.select(on_models, outputs=[models_empty, models_table, card_version, card])
        card_version.input(show_card, inputs=card_version, outputs=card)
    return ui


def table(rows: list[dict[str, Any]]) -> Any:
    """A table update: the rows, or hidden when there are none."""
    import pandas as pd

    return gradio().update(value=pd.DataFrame(rows) if rows else None, visible=bool(rows))


def image(path: Path | None) -> Any:
    """An image update: the plot, or hidden when there is none."""
    return gradio().update(value=str(path) if path else None, visible=path is not None)


def mount_ui(app: Any, service: Service, admin_token: str | None = None, path: str = "/") -> Any:
    return gradio().mount_gradio_app(app, build_ui(service, admin_token).queue(default_concurrency_limit=16), path=path, css=CSS,
                               ssr_mode=False, footer_links=["api"], show_error=True)
