"""The active-learning commands: one iteration (`al_iteration`) and a whole simulated campaign
(`active_learning`)."""

from __future__ import annotations

import click

from zoobot.cli.options import experiment_option, options_from, split_options, user_errors


def al_iteration() -> click.Command:
    from zoobot.active.loop import ALConfig
    from zoobot.model.network import ModelConfig

    @click.command(name="al_iteration", help="One active-learning iteration: train, predict the pool, acquire, "
                                             "request labels, ingest them. Resumable at every stage.")
    @options_from(ALConfig, ModelConfig)
    @experiment_option
    @user_errors
    def al_iteration(**options):
        from zoobot.active.iteration import run_logged_iterations

        config, model_config = split_options(options, ALConfig, ModelConfig)
        reports = run_logged_iterations(config, model_config, arm=config.acquisition)
        for report in reports:
            click.echo(iteration_line(report))
        click.echo(next_step(reports[-1], config))

    return al_iteration


def iteration_line(report) -> str:
    outcome, ingest = report.outcome, report.ingest
    status = ("waiting for volunteers' labels" if outcome.waiting_for_labels
              else f"{outcome.n_labelled} galaxies labelled")
    if ingest:
        status = f"{ingest.get('n_ingested', 0)} labels ingested; " + status
    if ingest.get("n_rejected"):
        status += (f"; {ingest['n_rejected']} label rows were set aside, each with its reason in "
                   f"{ingest['rejected_file']} (send corrected rows with the next --labels-file)")
    return (f"Iteration {outcome.iteration} ({', '.join(outcome.stages_run) or 'nothing left to do'}): "
            f"acquired {len(outcome.acquired)}; {status}.")


def next_step(report, config) -> str:
    """What the user does next, as a command where there is one."""
    outcome = report.outcome
    if not outcome.waiting_for_labels:
        return (f"Next: run the same command again for iteration {outcome.iteration + 1}"
                + (", or `zoobot report` to compare the runs." if config.oracle == "simulated" else "."))
    manifest = report.request.get("subject_manifest", "the iteration's subjects/ folder")
    return (
        f"Next: upload the {len(outcome.acquired)} galaxies to classify as a Zooniverse subject set:\n"
        f"    panoptes subject-set upload-subjects SUBJECT_SET_ID {manifest}\n"
        "Once volunteers have classified them, reduce the classifications to one row per subject (its '#id_str' "
        "and a vote count per answer) and run this same command with --labels-file REDUCED.csv (and --labels-map "
        "'reducer_column=schema_column,...' if the reducer names the answers its own way). Galaxies that are not "
        "in that file stay requested and may come back in a later file.")


def active_learning() -> click.Command:
    from zoobot.model.network import ModelConfig
    from zoobot.workflows.campaign import CampaignConfig

    @click.command(name="active_learning", help="A simulated campaign: several acquisition arms, each for N "
                                                "iterations, as nested runs; learning curves and label saving.")
    @options_from(CampaignConfig, ModelConfig)
    @experiment_option
    @user_errors
    def active_learning(**options):
        from zoobot.workflows.campaign import run_campaign

        config, model_config = split_options(options, CampaignConfig, ModelConfig)
        outcome = run_campaign(config, model_config, say=click.echo)
        saving = outcome.label_saving
        click.echo(f"Label saving of the best arm over random: {saving:.1%}" if saving == saving
                   else f"Label saving not computed: {outcome.reason}")
        from zoobot import tracking

        click.echo(f"Next: look at learning_curves.png in run {outcome.run_id} (each arm's iterations are its nested "
                   "runs, with the galaxies they acquired), or compare campaigns with zoobot report --experiment "
                   f"{tracking.experiment_name(outcome.run_id)}.")

    return active_learning
