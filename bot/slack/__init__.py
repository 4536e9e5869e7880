"""orch's Slack app (slack-bolt): ``bot.slack.service.build_slack`` is the entry point.

Modules: ``app`` builds the AsyncApp and registers the listener modules (``commands``,
``home``); ``http`` is the POST /slack/events route, ``socket_mode`` the WebSocket side;
``command_parser`` parses /orch text strictly; ``commands`` (reading), ``operations``
(silence, ack, action requests) and ``history`` answer it; ``replies`` renders every
answer from ``templates/`` with the view models of ``views``; ``fleet`` reads the board
``/orch status`` and App Home share; ``home_refresh`` republishes App Home on change and
``silences`` answers "is this project silenced?" for the notifier; ``work`` runs the slow
half of each request after the ack, de-duplicating Slack's retries.
"""
