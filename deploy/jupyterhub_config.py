# JupyterHub signing in through Postern (docker-compose.yml). The first block is what
# `postern client add jupyterhub --jupyterhub ...` prints; URLs and secrets come from the environment.
import os

postern = os.environ["POSTERN_URL"]
c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.login_service = "Postern"
c.GenericOAuthenticator.client_id = "jupyterhub"
c.GenericOAuthenticator.client_secret = os.environ["HUB_CLIENT_SECRET"]
c.GenericOAuthenticator.oauth_callback_url = os.environ["HUB_URL"] + "/hub/oauth_callback"
c.GenericOAuthenticator.authorize_url = postern + "/authorize"
c.GenericOAuthenticator.token_url = postern + "/token"
c.GenericOAuthenticator.userdata_url = postern + "/userinfo"
c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups"]
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.manage_groups = True
c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.GenericOAuthenticator.allowed_groups = {"e2e-users"}
c.GenericOAuthenticator.admin_groups = {"hub-admins"}

# The deployment around it.
c.GenericOAuthenticator.http_request_kwargs = {"ca_certs": "/srv/jupyterhub/ca.pem"}
c.GenericOAuthenticator.enable_auth_state = True  # uses JUPYTERHUB_CRYPT_KEY
c.GenericOAuthenticator.refresh_pre_spawn = True
c.JupyterHub.bind_url = "http://0.0.0.0:8000"
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/data/jupyterhub_cookie_secret"
c.JupyterHub.spawner_class = "simple"
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
