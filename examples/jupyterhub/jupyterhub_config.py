"""Lumen on JupyterHub (6.x): one trusted service, users' servers that hold no secret.

Copy this file next to your hub's config (or merge it in), then:

1. Create a system user for the service and its directory, readable by it only::

       useradd --system --home-dir /etc/lumen --shell /usr/sbin/nologin lumen
       install -d -m 0700 -o lumen -g lumen /etc/lumen /var/lib/lumen

2. Put lumen's own configuration in ``/etc/lumen/jupyter_lumen_config.py`` (mode 0600,
   owner ``lumen``) - the database URL with its password, and where the YAML (with the
   provider keys), the key secret and the admin token are::

       c.Lumen.database_url = "postgresql+psycopg://lumen:PASSWORD@db.example.org/lumen"
       c.Lumen.config_file = "/etc/lumen/lumen.yaml"      # 0600 too: it holds api_keys
       c.Lumen.secret_file = "/etc/lumen/secret"          # created 0600 on first start
       c.LumenServe.admin_token_file = "/etc/lumen/admin_token"
       # c.LumenServe.hub_cache_seconds = 60   # how long a hub answer is trusted

   Keep them in that file rather than on the command line (``--database-url``): a
   process's command line can be read by every user of the machine.

3. In the YAML, name groups after your hub groups: a hub group selects the YAML group
   of the same name (its pool and model rules), e.g. ``groups: {staff: {tokens:
   {max: 200, refresh: 10}}}``.

Nothing below is a secret: this file may be read by anyone. See docs/jupyterhub.md.
"""

import sys

c = get_config()  # noqa: F821

LUMEN_PORT = 8090  # where the service listens, on loopback; users reach it through the proxy

# -- the lumen service ----------------------------------------------------------------------
# A hub-managed service: the hub starts it (as the user "lumen"), restarts it if it
# dies, and stops it (SIGTERM reaches the supervisor, which stops its workers).  It
# gets its own hub token and finds out who each caller is by asking the hub.
c.JupyterHub.services = [
    {
        "name": "lumen",
        "url": f"http://127.0.0.1:{LUMEN_PORT}",
        "command": [
            sys.executable,
            *("-m", "lumen_jupyter.service"),
            *("--workers", "2"),  # more than one needs PostgreSQL
            *("--ip", "127.0.0.1", "--port", str(LUMEN_PORT)),
        ],
        "user": "lumen",  # when the hub runs as root; drop it if the hub runs as "lumen"
        "environment": {
            "JUPYTER_CONFIG_DIR": "/etc/lumen",  # jupyter_lumen_config.py, 0600
            "JUPYTER_DATA_DIR": "/var/lib/lumen",
        },
        "cwd": "/var/lib/lumen",
        "display": True,  # the admin page in the hub's Services menu
        "oauth_no_confirm": True,
        # what the admin page's login may carry: the lumen rights of the person logging in
        "oauth_client_allowed_scopes": ["custom:lumen:admin", "custom:lumen:grant"],
    },
]

# -- who may use it ------------------------------------------------------------------------
# Every user may call the service (with any of their hub tokens), and so may their
# server, with the token the hub gives it.  JupyterHub 5.x has no extra_user_scopes:
# redefine the "user" role instead (scopes: ["self", "access:services!service=lumen"]).
c.JupyterHub.extra_user_scopes = ["access:services!service=lumen"]
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=lumen",
]
# The token JupyterLab's page holds may reach the service too (as the person visiting).
c.Spawner.oauth_client_allowed_scopes = ["access:services!service=lumen"]

# Users' servers forward lumen/api/* and lumen/v1/* to the service, straight (not
# through the proxy).  This URL is not a secret; nothing else of lumen's is given to them.
c.Spawner.environment = {
    "LUMEN_SERVICE_URL": f"http://127.0.0.1:{LUMEN_PORT}/services/lumen/",
}

# -- lumen administrators ------------------------------------------------------------------
# Rights over other people's coins come from custom scopes, never from the hub's admin
# flag: a server's or kernel's token never carries them, so no kernel can mint coins,
# not even a hub admin's.  Administrators act on the admin page
# (/services/lumen/admin/) or with an API token they create on /hub/token.
c.JupyterHub.custom_scopes = {
    "custom:lumen:admin": {
        "description": "Lumen: grant coins, set pools, revoke keys and read usage of anyone",
    },
    "custom:lumen:grant": {
        "description": "Lumen: grant coins to, and read the pools of, members of a group",
    },
}
c.JupyterHub.load_roles = [
    {
        # the service reads users' groups (pools follow hub groups)
        "name": "lumen-service",
        "services": ["lumen"],
        "scopes": ["read:users", "list:users", "read:groups", "list:groups"],
    },
    {
        "name": "lumen-admins",
        "groups": ["lumen-admins"],  # or "users": ["ada"]
        "scopes": ["custom:lumen:admin"],
    },
    {
        # an instructor who may grant coins to one class only
        "name": "lumen-grant-class-a",
        "users": ["grace"],
        "scopes": ["custom:lumen:grant!group=class-a"],
    },
]
