"""orch's Slack app (slack-bolt): ``bot.slack.service.build_slack`` is the entry point.

Modules: ``app`` builds the AsyncApp and registers the listener modules (``commands``,
``home``); ``http`` is the POST /slack/events route, ``socket_mode`` the WebSocket side;
``command_parser`` parses /orch text strictly; ``replies`` formats answers; ``work`` runs
the slow half of each request after the ack, de-duplicating Slack's retries.
"""
