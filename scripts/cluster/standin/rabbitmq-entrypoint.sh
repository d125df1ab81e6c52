#!/bin/sh
# Entrypoint of MovieBook's RabbitMQ STAND-IN image (Debian bookworm's rabbitmq-server 3.10, not
# the official rabbitmq image): RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS become the default
# user (written into the configuration at every start, as the official image does), AMQP on
# 5672 on every address, data (mnesia, Erlang cookie in $HOME) in /var/lib/rabbitmq, logs on
# stdout.
set -eu
if [ "${1:-rabbitmq-server}" != rabbitmq-server ]; then exec "$@"; fi
conf=/etc/rabbitmq/conf.d/10-moviebook-standin.conf
mkdir -p /etc/rabbitmq/conf.d
{
  echo "listeners.tcp.default = 5672"
  echo "loopback_users = none"
  if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
  if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
} >"$conf"
chmod 600 "$conf"
exec rabbitmq-server
