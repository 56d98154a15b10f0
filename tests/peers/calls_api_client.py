"""Drives crossline's Calls API with the official `twilio` library's REST
client, pointed at crossline by the library's own API domain setting
(`client.api.base_url`), as an app moving off Twilio would.

    calls_api_client.py BASE_URL ACCOUNT_SID AUTH_TOKEN COMMAND JSON_ARGS

COMMAND is create, update, fetch, list or pages (page by page through
next_page_uri) for calls; queue_create, queue_update, queue_fetch,
queue_delete, queue_list, members, member_fetch and dequeue for queues and
their members. Prints one JSON line: the result, or
{"error": {"status", "code", "message"}} for a TwilioRestException.
"""

import json
import sys
import time

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

BASE, ACCOUNT, TOKEN, COMMAND = sys.argv[1:5]
ARGS = json.loads(sys.argv[5])

client = Client(ACCOUNT, TOKEN)
client.api.base_url = BASE


def call_json(c):
    return {
        "sid": c.sid,
        "account_sid": c.account_sid,
        "status": c.status,
        "direction": c.direction,
        "from": c._from,
        "to": c.to,
        "duration": c.duration,
        "date_created": c.date_created.isoformat() if c.date_created else None,
        "start_time": c.start_time.isoformat() if c.start_time else None,
        "end_time": c.end_time.isoformat() if c.end_time else None,
        "uri": c.uri,
    }


def queue_json(q):
    return {
        "sid": q.sid,
        "account_sid": q.account_sid,
        "friendly_name": q.friendly_name,
        "current_size": q.current_size,
        "max_size": q.max_size,
        "average_wait_time": q.average_wait_time,
        "date_created": q.date_created.isoformat() if q.date_created else None,
        "date_updated": q.date_updated.isoformat() if q.date_updated else None,
        "uri": q.uri,
    }


def member_json(m):
    return {
        "call_sid": m.call_sid,
        "queue_sid": m.queue_sid,
        "position": m.position,
        "wait_time": m.wait_time,
        "date_enqueued": m.date_enqueued.isoformat() if m.date_enqueued else None,
        "uri": m.uri,
    }


def run_queue():
    if COMMAND == "queue_create":
        return queue_json(client.queues.create(**ARGS))
    if COMMAND == "queue_update":
        sid = ARGS.pop("sid")
        return queue_json(client.queues(sid).update(**ARGS))
    if COMMAND == "queue_fetch":
        return queue_json(client.queues(ARGS["sid"]).fetch())
    if COMMAND == "queue_delete":
        return {"deleted": client.queues(ARGS["sid"]).delete()}
    if COMMAND == "queue_list":
        return [queue_json(q) for q in client.queues.list(**ARGS)]
    queue = client.queues(ARGS.pop("queue"))
    if COMMAND == "members":
        return [member_json(m) for m in queue.members.list(**ARGS)]
    if COMMAND == "member_fetch":
        return member_json(queue.members(ARGS["call_sid"]).fetch())
    if COMMAND == "dequeue":
        which = ARGS.pop("call_sid")
        return member_json(queue.members(which).update(**ARGS))
    raise SystemExit(f"unknown command {COMMAND}")


def run():
    if COMMAND.startswith("queue") or COMMAND in ("members", "member_fetch", "dequeue"):
        return run_queue()
    if COMMAND == "create":
        return call_json(client.calls.create(**ARGS))
    if COMMAND == "update":
        sid = ARGS.pop("sid")
        sent_at = time.time()
        out = call_json(client.calls(sid).update(**ARGS))
        out["sent_at"] = sent_at
        return out
    if COMMAND == "fetch":
        return call_json(client.calls(ARGS["sid"]).fetch())
    if COMMAND == "list":
        return [call_json(c) for c in client.calls.list(**ARGS)]
    if COMMAND == "pages":
        pages = []
        page = client.calls.page(**ARGS)
        while page is not None:
            pages.append([c.sid for c in page])
            page = page.next_page()
        return pages
    raise SystemExit(f"unknown command {COMMAND}")


try:
    result = run()
except TwilioRestException as e:
    result = {"error": {"status": e.status, "code": e.code, "message": e.msg}}
except TwilioException as e:
    # A page the library could not fetch carries the response itself.
    response = e.args[1]
    body = json.loads(response.text)
    result = {"error": {"status": response.status_code, "code": body.get("code"), "message": body.get("message")}}
print(json.dumps(result), flush=True)
