"""A client of cairn's HTTP API written with Python's standard library only (http.client,
urllib, ssl), for node/tests/http.rs: it is a client no one on the project wrote.

  http_client.py publish  BASE TOKEN CA TOPIC PAYLOAD...   prints the answer's JSON
  http_client.py longpoll BASE TOKEN CA CURSOR WAIT_MS     prints the answer's JSON
  http_client.py subscribe BASE TOKEN CA N                 prints each entry line; resumes
                                                           from its last cursor when the
                                                           connection breaks; exits after N
"""
import http.client
import json
import ssl
import sys
import time
import urllib.parse
import urllib.request


def context(ca):
    ctx = ssl.create_default_context(cafile=ca)  # checks the chain and the name "localhost"
    return ctx


def request(base, token, ca, method, path, body=None):
    req = urllib.request.Request(base + path, data=body, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if body is not None:
        req.add_header("Content-Type", "application/x-ndjson")
    try:
        with urllib.request.urlopen(req, context=context(ca), timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def publish(base, token, ca, topic, payloads):
    body = "".join(json.dumps({"topic": topic, "payload": p}) + "\n" for p in payloads).encode()
    status, answer = request(base, token, ca, "POST", "/v1/dbs/web/messages?ack=quorum", body)
    print(json.dumps({"status": status, "answer": answer}), flush=True)


def longpoll(base, token, ca, cursor, wait_ms):
    query = urllib.parse.urlencode({"cursor": cursor, "wait_ms": wait_ms})
    started = time.time()
    status, answer = request(base, token, ca, "GET", "/v1/dbs/web/messages?" + query)
    answer["took_s"] = time.time() - started
    print(json.dumps({"status": status, "answer": answer}), flush=True)


def subscribe(base, token, ca, n):
    url = urllib.parse.urlparse(base)
    cursor, seen, reconnects = "", 0, 0
    while seen < n:
        try:
            conn = http.client.HTTPSConnection(url.hostname, url.port, context=context(ca), timeout=30)
            path = "/v1/dbs/web/subscribe?" + urllib.parse.urlencode({"cursor": cursor})
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            answer = conn.getresponse()
            if answer.status != 200:
                raise OSError("status %d: %s" % (answer.status, answer.read()))
            while seen < n:
                line = answer.readline()
                if not line:
                    raise OSError("the stream ended")
                entry = json.loads(line)
                if "error" in entry:
                    raise OSError(json.dumps(entry))
                cursor = entry["cursor"]
                if "seq" in entry:
                    seen += 1
                    print(json.dumps(entry), flush=True)
        except (OSError, http.client.HTTPException) as error:
            reconnects += 1
            print(json.dumps({"reconnect": str(error)}), flush=True)
            time.sleep(0.5)
    print(json.dumps({"done": seen, "reconnects": reconnects}), flush=True)


if __name__ == "__main__":
    command, base, token, ca, *rest = sys.argv[1:]
    if command == "publish":
        publish(base, token, ca, rest[0], rest[1:])
    elif command == "longpoll":
        longpoll(base, token, ca, rest[0], rest[1])
    elif command == "subscribe":
        subscribe(base, token, ca, int(rest[0]))
    else:
        sys.exit("unknown command " + command)
