"""The active-learning commands: one iteration (`al_iteration`) and a whole simulated campaign
(`active_learning`)."""

from __future__ import annotations

import click

from zoobot.cli.options import options_from, split_options, user_errors


def al_iteration() -> click.Command:
    from zoobot.active.loop import ALConfig
    from zoobot.model.network import ModelConfig

    @click.command(name="al_iteration", help="One active-learning iteration: train, predict the pool, acquire, "
                                             "request labels, ingest them. Resumable at every stage.")
    @options_from(ALConfig, ModelConfig)
    @user_errors
    def al_iteration(**options):
        from zoobot.active.iteration import run_logged_iteration

        config, model_config = split_options(options, ALConfig, ModelConfig)
        outcome, state = run_logged_iteration(config, model_config, arm=config.acquisition)
        with state:
            ingest = state.stage_info(outcome.iteration, "ingest") if "ingest" in outcome.stages_run else {}
        status = ("waiting for volunteers' labels: rerun with --labels-file" if outcome.waiting_for_labels
                  else f"{outcome.n_labelled} galaxies labelled")
        if ingest.get("n_rejected"):
            status += (f"; {ingest['n_rejected']} label rows were set aside, each with its reason in "
                       f"{ingest['rejected_file']} (send corrected rows with the next --labels-file)")
        click.echo(f"Iteration {outcome.iteration} ({', '.join(outcome.stages_run) or 'nothing left to do'}): "
                   f"acquired {len(outcome.acquired)}; {status}.")

    return al_iteration


def active_learning() -> click.Command:
    from zoobot.model.network import ModelConfig
    from zoobot.workflows.campaign import CampaignConfig

    @click.command(name="active_learning", help="A simulated campaign: several acquisition arms, each for N "
                                                "iterations, as nested runs; learning curves and label saving.")
    @options_from(CampaignConfig, ModelConfig)
    @user_errors
    def active_learning(**options):
        from zoobot.workflows.campaign import run_campaign

        config, model_config = split_options(options, CampaignConfig, ModelConfig)
        outcome = run_campaign(config, model_config, say=click.echo)
        saving = outcome.label_saving
        click.echo(f"Label saving of the best arm over random: {saving:.1%}" if saving == saving
                   else f"Label saving not computed: {outcome.reason}")

    return active_learning
