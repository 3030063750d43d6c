import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the admin login if none exists: ADMIN_USERNAME / ADMIN_PASSWORD / ADMIN_EMAIL "
        "from the environment, else 'admin' with a random password printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("ADMIN_PASSWORD", "")
        user = User.objects.filter(username=username).first()
        if user and not password:
            self.stdout.write(f"Admin login '{username}' exists.")
            return
        if user:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
            self.stdout.write(f"Admin login '{username}': password set from ADMIN_PASSWORD.")
            return
        if User.objects.filter(is_superuser=True).exists() and "ADMIN_USERNAME" not in os.environ:
            self.stdout.write("An admin login exists.")
            return
        generated = not password
        password = password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username, os.environ.get("ADMIN_EMAIL", ""), password)
        if generated:
            self.stdout.write(
                self.style.SUCCESS(
                    f"\n  Admin login created: {username} / {password}\n"
                    "  (shown only this once; change it with: manage.py changepassword "
                    f"{username})\n"
                )
            )
        else:
            self.stdout.write(f"Admin login '{username}' created from ADMIN_PASSWORD.")
