# JupyterHub with GenericOAuthenticator and JupyterLab, at the versions the end-to-end test uses.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
 && npm install --global configurable-http-proxy@5.3.0 \
 && pip install --no-cache-dir jupyterhub==6.1.1 oauthenticator==17.4.0 jupyterlab==4.6.6 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/jupyterhub
CMD ["jupyterhub", "-f", "/srv/jupyterhub/jupyterhub_config.py"]
