#!/usr/bin/env python3
"""An HTTPS server for the Redis TLS bundle, as a cluster's operator would run one: serves
the zip only to a request whose ?access_token= equals $BUNDLE_TOKEN, 401 otherwise.

usage: bundle_server.py PORT CERT KEY BUNDLE_ZIP   (token in $BUNDLE_TOKEN)
"""
import http.server
import os
import ssl
import sys
import urllib.parse

port, cert, key, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
token = os.environ["BUNDLE_TOKEN"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if query.get("access_token") != [token]:
            self.send_response(401)
            self.end_headers()
            return
        with open(bundle, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer((os.environ.get("BUNDLE_HOST", "127.0.0.1"), port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
