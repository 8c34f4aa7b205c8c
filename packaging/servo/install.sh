#!/bin/sh
# Installs the servo bundle: the binary, the systemd unit, an example configuration and the guide.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
install -m 0755 "$here/bin/elb-servo" /usr/local/bin/elb-servo
install -d /etc/elb /usr/local/share/doc/elb-servo
[ -e /etc/elb/servo.toml ] || install -m 0644 "$here/etc/servo.toml.example" /etc/elb/servo.toml
install -m 0644 "$here/etc/servo.toml.example" /usr/local/share/doc/elb-servo/servo.toml.example
install -m 0644 "$here/OPERATOR-GUIDE.md" /usr/local/share/doc/elb-servo/OPERATOR-GUIDE.md
install -m 0644 "$here/systemd/elb-servo.service" /etc/systemd/system/elb-servo.service
echo "installed; edit /etc/elb/servo.toml, then: systemctl daemon-reload && systemctl enable --now elb-servo"
