# The Mage image of this project: the pinned lock installed at build time, not at start.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE= \
    PYTHONUNBUFFERED=1 \
    MAGE_DATA_DIR=/var/lib/mage \
    PROJECT_DATA_DIR=/var/lib/mage-project

WORKDIR /home/src/project
COPY requirements.txt ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.txt

COPY . .
RUN uv pip install --system --no-cache --no-deps -e . \
 && useradd --create-home --uid 10001 mage \
 && mkdir -p "$MAGE_DATA_DIR" "$PROJECT_DATA_DIR" \
 && chown -R mage "$MAGE_DATA_DIR" "$PROJECT_DATA_DIR"
USER mage

EXPOSE 6789
CMD ["python", "-m", "mage_project.mage_cli", "start", "/home/src/project", "--host", "0.0.0.0", "--port", "6789", "--instance-type", "web_server"]
