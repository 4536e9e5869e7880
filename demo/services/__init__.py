"""The simulated fleet's services, by project name."""

from demo.services.chatbot import Chatbot
from demo.services.domain import Domain
from demo.services.email_blast import EmailBlast
from demo.services.service import SimulatedService
from demo.services.social_media import SocialMedia

DOMAINS: dict[str, type[Domain]] = {d.name: d for d in (EmailBlast, Chatbot, SocialMedia)}

__all__ = ["DOMAINS", "Chatbot", "Domain", "EmailBlast", "SimulatedService", "SocialMedia"]
