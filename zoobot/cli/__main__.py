"""`python -m zoobot.cli`: the `zoobot` command."""

from zoobot.cli import main

main(prog_name="zoobot")
