"""Write src/powernode/_buildinfo.json (git SHA, build date) before building a wheel.

``powernode-agent version`` reads it; without it a checkout answers from git.
"""

from powernode.buildinfo import write

if __name__ == "__main__":
    print(write().line())
