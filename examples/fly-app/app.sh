echo "hello from a Fly.io machine"
